"""Token sampling: temperature, top-k and top-p filters, and the per-sample random streams.

Randomness. Each sample owns a counter-based stream: the uniform for step t of stream s under seed
`seed` is SplitMix64 (Steele, Lea & Flood, "Fast splittable pseudorandom number generators", OOPSLA
2014) evaluated at state key(seed, s) + t * golden, top 53 bits. A sample's draws therefore depend only
on (seed, its index in the call, step), never on which other samples share its batch, how the batch
is chunked, or any global RNG state.

Drawing. One uniform u per token, inverse-CDF sampling on p = softmax(l) over the kept tokens: the
token is the first v with cumsum(p)_v > u * sum(p) (Devroye, "Non-Uniform Random Variate Generation",
1986, II.2). The cumulative sum is hierarchical, which is the same draw done in two cheap steps: sums of
blocks of BLOCK tokens pick the block, then a cumulative sum inside that block alone picks the token.
Sums run in float64, so tokens of probability down to ~1e-16 keep their share; a full float64 cumsum
over a 49k vocabulary cost about 4x more per step (benchmarks/NOTES.md).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rlvr.core.filtering import filter_logits_  # noqa: F401  (the sampler's filter; re-exported)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function (uint64 arithmetic wraps modulo 2**64, which is what it needs)."""
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MUL1
    z = (z ^ (z >> np.uint64(27))) * _MUL2
    return z ^ (z >> np.uint64(31))


def stream_keys(seed: int, streams: list[int] | np.ndarray) -> np.ndarray:
    """A uint64 key per stream id, mixing the seed and the id so nearby seeds give unrelated streams."""
    with np.errstate(over="ignore"):
        s = _splitmix64(np.array([seed % 2**64], dtype=np.uint64))
        return _splitmix64(s ^ _splitmix64(np.asarray(streams, dtype=np.uint64)))


def stream_uniforms(keys: np.ndarray, step: int) -> np.ndarray:
    """Uniforms in [0, 1) (float64, 53 random bits) for step `step` of each stream."""
    with np.errstate(over="ignore"):
        z = _splitmix64(keys + np.uint64(step) * _GOLDEN)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def sample_next(
    logits: Tensor, uniforms: Tensor, *, temperature: float, top_k: int, top_p: float
) -> tuple[Tensor, Tensor]:
    """Draw one token per row; returns (tokens [B] long, logprobs [B] float32). Overwrites `logits`.

    logits: [B, V] float32 (the last position's); uniforms: [B] float64 in [0, 1), ignored when greedy.
    The log-prob is under the filtered, renormalised distribution the token was drawn from,
    log p_tok - log sum_v p_v with p = softmax(filtered logits / temperature). Greedy (temperature 0)
    takes the argmax (first index on ties, like torch.argmax in `generate`) and reports the plain
    log_softmax(logits) of it.
    """
    if temperature == 0:
        tokens = torch.argmax(logits, dim=-1)
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, None]).squeeze(-1)
        return tokens, logprobs
    probs = torch.softmax(filter_logits_(logits, temperature, top_k, top_p), dim=-1)  # removed tokens: 0
    tokens, total = inverse_cdf(probs, uniforms.to(probs.device))
    logprobs = (probs.gather(-1, tokens[:, None]).squeeze(-1).double().log() - total.log()).float()
    return tokens, logprobs


BLOCK = 1024


def inverse_cdf(weights: Tensor, uniforms: Tensor) -> tuple[Tensor, Tensor]:
    """The first index v with cumsum(w)_v > u * sum(w), per row; returns (indices [B], sum(w) [B] float64).

    weights: [B, V] >= 0 with a positive sum; uniforms: [B] float64 in [0, 1). Two levels (module
    docstring). Each comparison target is clamped below the matching total, so the chosen index always
    has a positive weight: a cumulative sum only grows past the target where a weight adds mass.
    """
    b, v = weights.shape
    full = v // BLOCK
    parts = []
    if full:
        parts.append(weights[:, : full * BLOCK].view(b, full, BLOCK).sum(-1, dtype=torch.float64))
    if v % BLOCK:
        parts.append(weights[:, full * BLOCK :].sum(-1, keepdim=True, dtype=torch.float64))
    block_cdf = torch.cat(parts, dim=1).cumsum(-1)  # [B, blocks]
    total = block_cdf[:, -1:]
    target = torch.minimum(uniforms[:, None] * total, _below(total))
    block = torch.searchsorted(block_cdf, target, right=True)  # [B, 1]
    before = torch.where(block > 0, block_cdf.gather(-1, (block - 1).clamp(min=0)), torch.zeros_like(target))
    index = block * BLOCK + torch.arange(BLOCK, device=weights.device)  # [B, BLOCK]
    inside = weights.gather(-1, index.clamp(max=v - 1)).double().masked_fill_(index >= v, 0.0)
    cdf = inside.cumsum(-1)
    rest = torch.minimum(target - before, _below(cdf[:, -1:]))
    offset = torch.searchsorted(cdf, rest, right=True)
    return (block * BLOCK + offset).squeeze(-1), total.squeeze(-1)


def _below(x: Tensor) -> Tensor:
    """The largest float below x (so that u * total < total holds despite rounding)."""
    return torch.nextafter(x, torch.zeros_like(x))
