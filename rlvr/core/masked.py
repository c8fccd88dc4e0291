"""Masked reductions over [N, T] tensors, and the checks at the core's boundary.

`mask` is True where an element counts. Masks are yes/no: a bool tensor, or a numeric one holding
only 0 and 1. A fractional mask (per-token weights) is refused everywhere in the core with a clear
error, because a reduction can weigh a fractional mask in the numerator, the denominator or both,
and each choice gives another estimator; per-token weights belong in the loss or the advantages
(`rl_objective`'s `is_weights` is one such weight).

Every public core function checks its tensor arguments first (`require`, `check_same_shape`), so a
missing (None) or mis-shaped argument is named in the error instead of failing deep inside.
"""

from __future__ import annotations

import torch
from torch import Tensor


def require(where: str, **tensors: object) -> None:
    """Raise TypeError naming the argument of `where` that is None or not a tensor."""
    for name, t in tensors.items():
        if t is None:
            raise TypeError(f"{where}: {name} is required (a tensor); got None")
        if not isinstance(t, Tensor):
            raise TypeError(f"{where}: {name} must be a torch.Tensor; got {type(t).__name__}")


def check_same_shape(**tensors: Tensor | None) -> None:
    """Raise ValueError naming every shape when the given tensors do not share one shape (None is skipped)."""
    for name, t in tensors.items():
        if t is not None and not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor or None; got {type(t).__name__}")
    shapes = {name: tuple(t.shape) for name, t in tensors.items() if t is not None}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {list(shape)}" for name, shape in shapes.items())
        raise ValueError(f"shape mismatch: {listed}; these must all have the same shape")


def as_bool_mask(mask: Tensor, name: str = "loss_mask") -> Tensor:
    """`mask` as a bool tensor. A numeric mask must hold only 0 and 1: fractional values are refused
    (see the module docstring) with an error that names them."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (bool, True where a token counts); got {type(mask).__name__}")
    if mask.dtype == torch.bool:
        return mask
    fractional = (mask != 0) & (mask != 1)
    if bool(fractional.any()):
        bad = mask[fractional][:5].tolist()
        raise ValueError(
            f"{name} must be boolean (True where a token counts) or hold only 0 and 1; got other values "
            f"such as {bad}. Per-token weights are not a mask: multiply them into the per-token loss or the "
            f"advantages instead"
        )
    return mask != 0


def masked_sum(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """sum(values * mask); masked-out elements contribute exactly 0 even if they are inf/nan."""
    require("masked_sum", values=values, mask=mask)
    check_same_shape(values=values, mask=mask)
    zeros = torch.zeros((), dtype=values.dtype, device=values.device)
    masked = torch.where(as_bool_mask(mask, "mask"), values, zeros)
    return masked.sum() if dim is None else masked.sum(dim)


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """sum(values * mask) / max(sum(mask), 1): 0 where nothing counts."""
    require("masked_mean", values=values, mask=mask)
    mask = as_bool_mask(mask, "mask")
    count = mask.sum() if dim is None else mask.sum(dim)
    return masked_sum(values, mask, dim) / count.clamp(min=1).to(values.dtype)


def masked_var(values: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of the counted elements (Bessel-corrected when `unbiased` and more than one counts)."""
    require("masked_var", values=values, mask=mask)
    check_same_shape(values=values, mask=mask)
    mask = as_bool_mask(mask, "mask")
    # Zero the masked-out elements first: an inf there would otherwise turn (inf - mean)**2 into a
    # nan gradient (0 * inf) for every element, even though the forward value ignores it.
    values = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
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
    require("masked_whiten", values=values, mask=mask)
    check_same_shape(values=values, mask=mask)
    mask = as_bool_mask(mask, "mask")
    # As in masked_var: masked-out inf/nan must not reach the backward pass.
    values = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
    mean = masked_mean(values, mask)
    var = masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask, whitened, torch.zeros_like(whitened))
