"""Seeds of a run's random streams, derived from (run seed, purpose, step, round, epoch, ...).

Each stream gets `derive_seed(seed, purpose, *indices)`: numpy's `SeedSequence` hashes the whole
tuple of non-negative integers into a 63-bit seed, so distinct tuples give unrelated seeds and no
two purposes, steps or rounds share a stream. Linear mixes such as `seed * 7919 + step * 31 + round`
collide (seed 1, step 0 and seed 0, step 255, round 14 both give 7919), which silently reuses the same
samples in two places of a run or across the seeds of a study.
"""

from __future__ import annotations

import numpy as np

# Purposes: one per random stream of a run (values are part of the hash; never reuse or renumber).
ROLLOUT = 1
MINIBATCH = 2
GREEDY_BASELINE = 3
EVAL = 4
DATA = 5
COVARIANCE = 6
GRAD_VARIANCE = 7


def derive_seed(seed: int, purpose: int, *indices: int) -> int:
    """A seed in [0, 2**63) for the stream (seed, purpose, *indices); all must be integers >= 0
    (a negative run seed is mapped to its two's-complement 64-bit value)."""
    rest = [int(purpose), *(int(i) for i in indices)]
    if any(not 0 <= p < 2**32 for p in rest):
        raise ValueError(f"purpose and indices must be >= 0 and < 2**32, got {rest}")
    s64 = int(seed) % 2**64
    # Fixed-width words and the number of indices: SeedSequence alone maps [a] and [a, 0] to one state.
    words = [s64 & 0xFFFFFFFF, s64 >> 32, len(rest), *rest]
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])
