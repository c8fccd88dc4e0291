"""Entropy of the next-token distribution from its logits.

    H = -sum_v p_v log p_v = logsumexp(z) - sum_v p_v z_v,   p = softmax(z)

computed after shifting z by its maximum (H does not change under z -> z - c): with the largest logit
at 0, both terms are of the size of the spread of the logits rather than of the logits themselves,
so logits around 1e4 lose no precision to cancellation. Entries at -inf (a masked vocabulary) have
p_v = 0 and contribute 0.

The vocabulary is large (49k for SmolLM2, 150k for Qwen), so a [N, T, V] float32 softmax can dominate
memory; the result at each position depends only on that position, so it can be computed in chunks
along the sequence (`chunk_size`, or by the caller) with identical results.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlvr.core.masked import require


def entropy_from_logits(logits: Tensor, *, chunk_size: int | None = None) -> Tensor:
    """Entropy [...] (natural log) of softmax(logits [..., V]) over the last dimension.

    chunk_size: compute over at most this many positions (of the flattened leading dimensions) at a
        time, to bound the temporary memory to chunk_size * V; None does all at once.
    """
    require("entropy_from_logits", logits=logits)
    if logits.dim() == 0:
        raise ValueError("logits must have a vocabulary dimension [..., V], got a 0-dim tensor")
    if chunk_size is None:
        return _entropy(logits)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
    flat = logits.reshape(-1, logits.shape[-1])
    parts = [_entropy(flat[i : i + chunk_size]) for i in range(0, flat.shape[0], chunk_size)]
    out = torch.cat(parts) if parts else flat.new_empty(0)
    return out.reshape(logits.shape[:-1])


def _entropy(logits: Tensor) -> Tensor:
    # The shift is a constant per position: its gradient contribution cancels exactly, so detach it.
    shifted = logits - logits.amax(dim=-1, keepdim=True).detach()
    log_z = torch.logsumexp(shifted, dim=-1)
    probs = torch.softmax(shifted, dim=-1)
    # p * z would be 0 * -inf = nan at masked vocabulary entries (their true contribution is 0); zero z
    # there before the product so that neither the value nor the gradient sees the inf.
    zero = torch.zeros((), dtype=shifted.dtype, device=shifted.device)
    finite_shifted = torch.where(probs > 0, shifted, zero)
    return log_z - (probs * finite_shifted).sum(dim=-1)
