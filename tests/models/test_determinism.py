"""Same seed, same machine, fresh processes: identical runs.

The source found: the packed training forward gathered rows with repeated indices (`x[idx]` where a
prompt's state feeds every sample of its group). The backward of that gather is
`index_put(accumulate=True)`, which PyTorch's CPU kernel runs with unordered float atomics when more
than one thread works on at least 32768 elements, so gradients differed in the last bits from run to
run and fresh runs of the default recipe split into two trajectories at step 2. The gathers now use
`index_select`, whose backward (`index_add`) sums in index order.

The structural test below fails on the old code whatever the thread timing: it records every
accumulating `index_put` of a whole training step's backward and rejects any with repeated indices.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from rlvr.models.logprobs import response_logprobs
from rlvr.models.tiny import make_tiny_model
from tests.models.test_packed import group_batch


class _AccumulatingIndexPuts(TorchDispatchMode):
    """Records the indices of every index_put with accumulate=True."""

    def __init__(self):
        super().__init__()
        self.duplicated = []
        self.seen = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.ops.aten.index_put.default, torch.ops.aten.index_put_.default,
                    torch.ops.aten._index_put_impl_.default):
            accumulate = args[3] if len(args) > 3 else kwargs.get("accumulate", False)
            if accumulate:
                self.seen += 1
                for idx in args[1]:
                    if idx is not None and idx.dtype != torch.bool and idx.numel() != torch.unique(idx).numel():
                        self.duplicated.append((str(func), tuple(args[0].shape)))
        return func(*args, **(kwargs or {}))


def test_training_backward_has_no_atomic_accumulation_over_repeated_indices():
    model, _ = make_tiny_model(seed=0)
    # Groups of 4 samples per prompt, a shared system prefix, unequal lengths: the packed path's shapes.
    ids, mask, t = group_batch(model.config.vocab_size, [7, 9, 5], 4, [3, 5, 1, 4, 2, 2, 5, 3, 4, 1, 2, 3], shared=3)
    for packed in (True, False):
        lp, ent = response_logprobs(model, ids, mask, t, return_entropy=True, packed=packed)
        with _AccumulatingIndexPuts() as mode:
            (lp.sum() + ent.sum()).backward()
        model.zero_grad()
        assert mode.duplicated == [], f"packed={packed}: non-deterministic accumulation in {mode.duplicated}"
