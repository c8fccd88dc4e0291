"""The per-micro-batch RL objective as one pure function: tensors and numbers in, loss and metrics out.

The trainer (rlvr/train/rl.py) does the forward passes, calls `rl_objective` once per micro-batch,
backpropagates the result and steps the optimizers. Everything that decides *what* is minimised lives
here, so it can be tested with hand-made tensors:

    policy term   l_pg  = w_is * policy_loss(logp, old_logp, A)           per token, [N, T]
    KL term       l_kl  = kl_coef * k(logp, ref_logp)                     only with KL in the loss
    entropy term  l_ent = -entropy_coef * H                               entropy bonus
    policy loss   L_pi  = aggregate(l_pg + l_kl + l_ent, loss_mask, aggregation, global denominators)
    value loss    L_v   = aggregate(value_loss(V, V_old, R), loss_mask, "token_mean", value denominator)
    loss          L     = L_pi + L_v

- The importance weights w_is (training-inference correction, `rlvr.core.importance`) multiply the
  policy-gradient term only: they correct the distribution the *samples* came from, which the KL and
  entropy terms, evaluated exactly at the visited states, do not depend on in the same way.
- KL in the *reward* is not a term here: it is a detached per-token penalty folded into the rewards
  before the advantages are computed (`rlvr.core.advantages`, reward-to-go), so it reaches the loss
  only through A and carries no gradient of its own. Which KL gradient each placement follows:
  `rlvr.core.kl`. k1 in the loss has zero expected gradient and is refused.
- The value loss has its own aggregation (token mean over the mini-batch's valid tokens) and its own
  parameters (the critic), so adding it to L leaves the policy's gradient unchanged.
- Denominators (`num_tokens`, `num_sequences`, `constant`, `value_num_tokens`) are those of the whole
  mini-batch (and, with data parallelism, of all ranks), so the sum over micro-batches of L and of its
  gradient is the mini-batch's, whatever the micro-batch size.
- A micro-batch whose mask is all False gives a loss of exactly 0 with a zero gradient.

Metrics are detached 0-dim tensors: `policy_loss`, `value_loss` (with a critic), means over this
micro-batch's valid tokens of `entropy` and `kl_loss` (when given), the policy loss's own metrics
(clip fractions, approx_kl, ratio_mean, ...), and `num_valid_tokens`, the weight to average them by.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from rlvr.core.aggregation import aggregate
from rlvr.core.kl import kl_divergence
from rlvr.core.losses import policy_loss, value_loss
from rlvr.core.masked import as_bool_mask, check_same_shape, masked_mean, require

Count = int | float | Tensor | None


def rl_objective(
    logprobs: Tensor,
    *,
    loss_mask: Tensor,
    advantages: Tensor,
    old_logprobs: Tensor | None = None,
    loss: str = "ppo_clip",
    loss_params: Mapping[str, Any] | None = None,
    aggregation: str = "token_mean",
    num_tokens: Count = None,
    num_sequences: Count = None,
    constant: float | None = None,
    is_weights: Tensor | None = None,
    ref_logprobs: Tensor | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "k3",
    entropy: Tensor | None = None,
    entropy_coef: float = 0.0,
    values: Tensor | None = None,
    old_values: Tensor | None = None,
    returns: Tensor | None = None,
    value_clip: float | None = 0.2,
    value_num_tokens: Count = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The scalar loss of one micro-batch and its metrics (see the module docstring).

    logprobs: [N, T] current policy, with gradient. old_logprobs: the policy that produced the data;
      None means exactly on-policy (the detached `logprobs` stand in, so every ratio is 1).
    loss, loss_params: a `POLICY_LOSSES` name and its options (clip_low, clip_high, selected, ...).
    aggregation, num_tokens, num_sequences, constant: as for `rlvr.core.aggregation.aggregate`.
    is_weights: [N, T] detached training-inference weights, or None.
    ref_logprobs, kl_coef, kl_estimator: the KL-in-the-loss term (skipped when kl_coef is 0 or
      ref_logprobs is None).
    entropy, entropy_coef: per-token entropies [N, T] (with gradient) and the bonus coefficient.
    values, old_values, returns, value_clip: the critic's clipped value loss (skipped when values is None).
    value_num_tokens: the value loss's token denominator (default num_tokens).
    """
    require("rl_objective", logprobs=logprobs, loss_mask=loss_mask, advantages=advantages)
    mask = as_bool_mask(loss_mask)
    check_same_shape(logprobs=logprobs, loss_mask=mask, advantages=advantages, old_logprobs=old_logprobs,
                     is_weights=is_weights, ref_logprobs=ref_logprobs, entropy=entropy)
    use_kl = ref_logprobs is not None and kl_coef != 0
    if use_kl and kl_estimator == "k1":
        raise ValueError(
            "k1 in the loss has zero expected gradient (E_pi[grad log pi] = 0), so it would not regularise; "
            "use k3 (follows the forward KL(pi_ref||pi), GRPO) or k2 (the reverse KL(pi||pi_ref)) in the loss, "
            "or put k1 in the reward (reverse KL)"
        )
    if entropy_coef != 0 and entropy is None:
        raise ValueError("entropy_coef is set but no per-token entropy was given")
    old = logprobs.detach() if old_logprobs is None else old_logprobs
    zero = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)

    per_token, metrics = policy_loss(
        loss, logprobs=logprobs, old_logprobs=old, advantages=advantages, loss_mask=mask, **dict(loss_params or {})
    )
    if is_weights is not None:
        per_token = per_token * torch.where(mask, is_weights.detach(), zero)
    if use_kl:
        kl = kl_divergence(logprobs, ref_logprobs, kl_estimator, loss_mask=mask)
        per_token = per_token + kl_coef * kl
        metrics["kl_loss"] = masked_mean(kl.detach(), mask)
    if entropy is not None:
        ent = torch.where(mask, entropy, zero)
        if entropy_coef != 0:
            per_token = per_token - entropy_coef * ent
        metrics["entropy"] = masked_mean(ent.detach(), mask)
    total = aggregate(
        per_token, mask, aggregation, num_tokens=num_tokens, num_sequences=num_sequences, constant=constant
    )
    metrics["policy_loss"] = total.detach()
    if values is not None:
        vloss, vm = value_objective(values, old_values, returns, mask, value_clip=value_clip,
                                    num_tokens=num_tokens if value_num_tokens is None else value_num_tokens)
        total = total + vloss
        metrics.update(vm)
    metrics["num_valid_tokens"] = mask.sum().to(logprobs.dtype)
    return total, {k: v.detach() for k, v in metrics.items()}


def value_objective(values: Tensor, old_values: Tensor | None, returns: Tensor | None, loss_mask: Tensor, *,
                    value_clip: float | None = 0.2, num_tokens: Count = None) -> tuple[Tensor, dict[str, Tensor]]:
    """The critic's part of `rl_objective` alone: L_v = aggregate(value_loss(V, V_old, R), "token_mean") and its
    metrics (value_loss and the clip fraction). The trainer differentiates it apart from the policy's part (they
    share no parameters), so the two graphs are never alive at once."""
    require("value_objective", values=values, old_values=old_values, returns=returns, loss_mask=loss_mask)
    mask = as_bool_mask(loss_mask)
    vl, metrics = value_loss(values, old_values, returns, mask, clip_range=value_clip)
    vloss = aggregate(vl, mask, "token_mean", num_tokens=num_tokens)
    metrics["value_loss"] = vloss.detach()
    return vloss, {k: v.detach() for k, v in metrics.items()}
