"""Training-inference mismatch correction: importance weights pi_old / pi_sampler.

The inference engine (vLLM, or even the HF generate path in another precision) that samples the
responses is not numerically the policy the trainer differentiates: its log-probs (`sampler_logprobs`)
differ from the trainer's recomputation of the same policy (`old_logprobs`). The samples are therefore
slightly off-policy, and the policy gradient is corrected by the importance weight

    w = pi_old(y) / pi_sampler(y)

- token level:    w_it = exp(old_logprobs_it - sampler_logprobs_it)
- sequence level: w_i  = prod_{t valid} w_it = exp(sum_{t valid} (old - sampler)), broadcast to the
                  tokens of row i. Exact for the sequence-level (outcome-reward) objective, but its
                  variance grows with the length (Zheng et al. 2025, "Stabilizing Reinforcement
                  Learning with LLMs: Formulation and Practices" (MiniRL), arXiv:2512.01374).

and bounded with a `cap` C, which trades variance for bias:

- `truncate`: w <- min(w, C)  (truncated importance sampling, Yao et al. 2025, "Your Efficient RL
              Framework Secretly Brings You Off-Policy RL Training", fengyao.notion.site; Ionides 2008)
- `mask`:     w <- w if lower <= w <= C else 0: tokens (or whole sequences) whose mismatch is too
              large are dropped from the gradient instead of being down-weighted.

The weights are constants (detached): they correct the sampling distribution and carry no gradient.
The trainer applies them to the per-token loss before aggregation,

    loss = aggregate(per_token_loss * weights, loss_mask, mode, ...)

so the denominators (num_tokens, num_sequences) still count masked-by-IS tokens; dropping them from
the denominators too would change the loss scale with the mismatch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rlvr.core.masked import as_bool_mask, check_same_shape, masked_mean, require

LEVELS = ("token", "sequence")
MODES = ("truncate", "mask")


def importance_weights(
    old_logprobs: Tensor,
    sampler_logprobs: Tensor,
    loss_mask: Tensor,
    *,
    level: str = "token",
    mode: str = "truncate",
    cap: float = 2.0,
    lower: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Importance weights [N, T] (detached, 0 where `loss_mask` is False) and their metrics.

    level: "token" or "sequence" (see the module docstring).
    mode: "truncate" (min(w, cap)) or "mask" (w if lower <= w <= cap, else 0).
    cap: the upper bound C > 0 (2.0 is the common token-level choice, e.g. verl's default).
    lower: only with mode="mask": the lower bound, 0 <= lower < cap (None: no lower bound).

    Metrics (0-dim, detached; means over valid tokens): is_weight_mean and is_weight_max of the
    weights after the cap, is_truncated_frac (truncate) or is_masked_frac (mask): the fraction of
    valid tokens whose raw weight the cap (or lower bound) changed, and logprob_mismatch, the mean of
    |old_logprobs - sampler_logprobs|.
    """
    require("importance_weights", old_logprobs=old_logprobs, sampler_logprobs=sampler_logprobs, loss_mask=loss_mask)
    check_same_shape(old_logprobs=old_logprobs, sampler_logprobs=sampler_logprobs, loss_mask=loss_mask)
    if level not in LEVELS:
        raise ValueError(f"unknown importance-weight level {level!r}; known: {', '.join(LEVELS)}")
    if mode not in MODES:
        raise ValueError(f"unknown importance-weight mode {mode!r}; known: {', '.join(MODES)}")
    if not cap > 0:
        raise ValueError(f"cap must be > 0 (the largest weight kept, e.g. 2.0), got {cap}")
    if lower is not None:
        if mode != "mask":
            raise ValueError("lower applies only to mode='mask' (truncate only bounds from above); drop it")
        if not 0 <= lower < cap:
            raise ValueError(f"lower must satisfy 0 <= lower < cap = {cap}, got {lower}")

    mask = as_bool_mask(loss_mask)
    with torch.no_grad():
        zero = torch.zeros((), dtype=old_logprobs.dtype, device=old_logprobs.device)
        # Masked positions may hold anything (inf from padding); zero them before any arithmetic.
        log_w = torch.where(mask, old_logprobs - sampler_logprobs, zero)
        abs_diff = log_w.abs()
        if level == "sequence":
            log_w = log_w.sum(dim=-1, keepdim=True).expand_as(log_w)
        # Compare in log space so that a sequence weight that overflows exp() is still capped exactly.
        log_cap = math.log(cap)
        if mode == "truncate":
            changed = log_w > log_cap
            weights = torch.exp(log_w.clamp(max=log_cap))
        else:
            keep = log_w <= log_cap
            if lower is not None:
                keep &= log_w >= (math.log(lower) if lower > 0 else -math.inf)
            changed = ~keep
            weights = torch.where(keep, torch.exp(log_w.clamp(max=log_cap)), zero)
        weights = torch.where(mask, weights, zero)
        changed &= mask

        metrics = {
            "is_weight_mean": masked_mean(weights, mask),
            "is_weight_max": torch.where(mask, weights, zero).amax() if weights.numel() else zero,
            ("is_truncated_frac" if mode == "truncate" else "is_masked_frac"): masked_mean(
                changed.to(weights.dtype), mask
            ),
            "logprob_mismatch": masked_mean(abs_diff, mask),
        }
    return weights, metrics
