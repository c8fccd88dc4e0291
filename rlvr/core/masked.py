"""Masked reductions over [N, T] tensors. `mask` is True where an element counts."""

from __future__ import annotations

import torch
from torch import Tensor


def check_same_shape(**tensors: Tensor | None) -> None:
    """Raise ValueError naming every shape when the given tensors do not share one shape."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items() if t is not None}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {list(shape)}" for name, shape in shapes.items())
        raise ValueError(f"shape mismatch: {listed}; these must all have the same shape")


def masked_sum(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """sum(values * mask); masked-out elements contribute exactly 0 even if they are inf/nan."""
    check_same_shape(values=values, mask=mask)
    zeros = torch.zeros((), dtype=values.dtype, device=values.device)
    masked = torch.where(mask.bool(), values, zeros)
    return masked.sum() if dim is None else masked.sum(dim)


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """sum(values * mask) / max(sum(mask), 1): 0 where nothing counts."""
    count = mask.sum() if dim is None else mask.sum(dim)
    return masked_sum(values, mask, dim) / count.clamp(min=1).to(values.dtype)


def masked_var(values: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of the counted elements (Bessel-corrected when `unbiased` and more than one counts)."""
    check_same_shape(values=values, mask=mask)
    # Zero the masked-out elements first: an inf there would otherwise turn (inf - mean)**2 into a
    # nan gradient (0 * inf) for every element, even though the forward value ignores it.
    values = torch.where(mask.bool(), values, torch.zeros((), dtype=values.dtype, device=values.device))
    mean = masked_mean(values, mask)
    sq = masked_sum((values - mean) ** 2, mask)
    count = mask.sum().to(values.dtype)
    if unbiased:
        count = torch.where(count > 1, count - 1, count)
    return sq / count.clamp(min=1)


def masked_whiten(values: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """(values - mean) / sqrt(var + eps) over the counted elements; masked-out elements become 0.

    With `shift_mean=False` the mean is added back (scale only), as in PPO reward whitening.
    """
    check_same_shape(values=values, mask=mask)
    # As in masked_var: masked-out inf/nan must not reach the backward pass.
    values = torch.where(mask.bool(), values, torch.zeros((), dtype=values.dtype, device=values.device))
    mean = masked_mean(values, mask)
    var = masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask.bool(), whitened, torch.zeros_like(whitened))
