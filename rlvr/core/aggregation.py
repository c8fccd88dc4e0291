"""Loss aggregation: a per-token loss [N, T] and its `loss_mask` to the scalar that is minimised.

How the per-token terms are weighted is a real algorithmic choice (the "length bias" of Liu et al.
2025, "Understanding R1-Zero-Like Training: A Critical Perspective", arXiv:2503.20783):

- `token_mean`:              sum_{i,t} l_it / num_tokens. Every token weighs the same (DAPO, Yu et al.
                             2025, arXiv:2503.14476); long responses weigh more in total.
- `seq_mean_token_mean`:     (1 / num_sequences) sum_i (1 / |o_i|) sum_t l_it. Every sequence weighs
                             the same (GRPO, Shao et al. 2024, arXiv:2402.03300, Eq. 3); a token of a
                             short response weighs more than one of a long response.
- `seq_mean_token_sum`:      (1 / num_sequences) sum_i sum_t l_it.
- `seq_mean_token_sum_norm`: (1 / (constant * num_sequences)) sum_i sum_t l_it, with `constant` the
                             generation budget (max_new_tokens): Dr. GRPO's fix (Liu et al. 2025: GRPO's
                             1/|o_i| replaced by a constant). When `constant` is None it falls
                             back to T = loss_mask.shape[1], which changes with the padding of the batch
                             (and of each micro-batch): pass the budget for an exact Dr. GRPO loss.

Micro-batches and data parallelism (docs/design.md, "The training step", step 7): the loss normalisation must not
change with the micro-batch size. Every mode above is a sum over rows divided by a batch-wide
denominator, so a trainer that splits a mini-batch into micro-batches (or ranks) passes the
mini-batch's `num_tokens` / `num_sequences` (and the fixed `constant`) to every micro-batch; the sum
of the micro-batch losses (and of their gradients) is then exactly the mini-batch's. Without them the
denominators are those of the batch given.

`num_sequences` counts the rows with at least one valid token, as verl's `agg_loss` does
(verl/trainer/ppo/core_algos.py): a row whose mask is all False (a filtered or empty response)
neither contributes nor dilutes the mean. A denominator of 0 (nothing counts) gives a loss of 0 with
a zero gradient, never nan.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from rlvr.core.masked import as_bool_mask, check_same_shape, require
from rlvr.core.registry import Registry

AggregationFn = Callable[..., Tensor]
AGGREGATIONS: Registry[AggregationFn] = Registry("aggregation")

Count = int | float | Tensor | None


def _masked_rows(per_token_loss: Tensor, loss_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row sums [N] of the loss (masked-out entries exactly 0, even inf/nan) and row token counts [N]."""
    require("aggregation", per_token_loss=per_token_loss, loss_mask=loss_mask)
    if per_token_loss.dim() != 2:
        raise ValueError(
            f"per_token_loss must be [N, T] (2-D), got shape {list(per_token_loss.shape)}"
        )
    check_same_shape(per_token_loss=per_token_loss, loss_mask=loss_mask)
    mask = as_bool_mask(loss_mask)
    zero = torch.zeros((), dtype=per_token_loss.dtype, device=per_token_loss.device)
    row_sums = torch.where(mask, per_token_loss, zero).sum(dim=1)
    return row_sums, mask.sum(dim=1)


def _denominator(given: Count, default: Tensor, name: str, like: Tensor) -> Tensor:
    """The given batch-wide count (or the local default) as a positive tensor; 0 becomes 1 (the sum is 0 then)."""
    if given is None:
        value = default
    elif isinstance(given, Tensor):
        value = given
    else:
        if given < 0:
            raise ValueError(f"{name} must be >= 0 (a count over the whole batch), got {given}")
        value = torch.tensor(given)
    return value.to(device=like.device, dtype=like.dtype).clamp(min=1)


@AGGREGATIONS.register("token_mean")
def token_mean(per_token_loss: Tensor, loss_mask: Tensor, *, num_tokens: Count = None, **_: object) -> Tensor:
    """sum_{i,t} mask_it * l_it / num_tokens (default: the number of valid tokens in this batch)."""
    row_sums, row_counts = _masked_rows(per_token_loss, loss_mask)
    return row_sums.sum() / _denominator(num_tokens, row_counts.sum(), "num_tokens", row_sums)


@AGGREGATIONS.register("seq_mean_token_mean")
def seq_mean_token_mean(
    per_token_loss: Tensor, loss_mask: Tensor, *, num_sequences: Count = None, **_: object
) -> Tensor:
    """sum_i (sum_t mask_it * l_it / |o_i|) / num_sequences (default: rows with a valid token)."""
    row_sums, row_counts = _masked_rows(per_token_loss, loss_mask)
    row_means = row_sums / row_counts.clamp(min=1).to(row_sums.dtype)
    default = (row_counts > 0).sum()
    return row_means.sum() / _denominator(num_sequences, default, "num_sequences", row_sums)


@AGGREGATIONS.register("seq_mean_token_sum")
def seq_mean_token_sum(
    per_token_loss: Tensor, loss_mask: Tensor, *, num_sequences: Count = None, **_: object
) -> Tensor:
    """sum_i sum_t mask_it * l_it / num_sequences (default: rows with a valid token)."""
    row_sums, row_counts = _masked_rows(per_token_loss, loss_mask)
    default = (row_counts > 0).sum()
    return row_sums.sum() / _denominator(num_sequences, default, "num_sequences", row_sums)


@AGGREGATIONS.register("seq_mean_token_sum_norm")
def seq_mean_token_sum_norm(
    per_token_loss: Tensor,
    loss_mask: Tensor,
    *,
    num_sequences: Count = None,
    constant: float | None = None,
    **_: object,
) -> Tensor:
    """Dr. GRPO: sum_i sum_t mask_it * l_it / (constant * num_sequences); constant defaults to T."""
    if constant is None:
        constant = per_token_loss.shape[-1] if per_token_loss.dim() == 2 else 1
    elif not constant > 0:
        raise ValueError(
            f"constant must be > 0 (the generation budget, e.g. max_new_tokens), got {constant}"
        )
    return seq_mean_token_sum(per_token_loss, loss_mask, num_sequences=num_sequences) / constant


def aggregate(
    per_token_loss: Tensor,
    loss_mask: Tensor,
    mode: str,
    *,
    num_tokens: Count = None,
    num_sequences: Count = None,
    constant: float | None = None,
) -> Tensor:
    """Aggregate a per-token loss [N, T] to a 0-dim tensor with the named mode (see the module docstring).

    `num_tokens` / `num_sequences` are the batch-wide counts when this is one micro-batch of a larger
    batch (ints or tensors); each mode uses the ones it needs and ignores the others, so a trainer can
    pass all of them whatever the mode. `constant` is Dr. GRPO's normaliser.
    """
    return AGGREGATIONS[mode](
        per_token_loss, loss_mask, num_tokens=num_tokens, num_sequences=num_sequences, constant=constant
    )


def batch_counts(loss_mask: Tensor) -> dict[str, Tensor]:
    """The global denominators of a whole batch, to pass to `aggregate` for each of its micro-batches."""
    require("batch_counts", loss_mask=loss_mask)
    mask = as_bool_mask(loss_mask)
    return {"num_tokens": mask.sum(), "num_sequences": mask.any(dim=-1).sum()}
