"""Per-token KL estimators between the current policy and the frozen reference, and the adaptive coefficient.

The tokens were sampled from the current policy pi, so with log_ratio = logp - ref_logp each estimator
below is a one-sample estimate of KL(pi || pi_ref) = E_pi[log pi - log pi_ref] (Schulman 2020,
"Approximating KL Divergence", http://joschu.net/blog/kl-approx.html):

- `k1`  = logp - ref_logp                                 unbiased, high variance, can be negative
- `k2`  = 0.5 * (logp - ref_logp)^2                       biased (low bias when pi ~ pi_ref), >= 0
- `k3`  = exp(ref_logp - logp) - (ref_logp - logp) - 1    unbiased and >= 0 (the "low-variance KL"
                                                           that GRPO puts in its loss, Shao et al. 2024,
                                                           arXiv:2402.03300, Eq. 4)
- `abs` = |logp - ref_logp|                               >= 0, biased

The same functions serve both placements: detached, as a per-token penalty in the reward
(`token_rewards - coef * kl.detach()`, Ziegler et al. 2019 / Ouyang et al. 2022), or with gradient, as
a loss term (`coef * aggregate(kl, loss_mask, mode)`, GRPO). The estimates are per token [N, T]; the
caller masks and aggregates them.

Which gradient a placement follows. An estimator's *value* being an unbiased KL estimate says nothing
about its *gradient*: in the loss, the samples y ~ pi are held fixed and autograd differentiates the
estimator itself; in the reward, the estimate is a constant that reaches the policy only through the
score function, E[k * grad log pi]. With r = pi_ref / pi at a sampled token, the identities below hold
*per visited state* s_t (one token's distribution pi(. | s_t), the state held fixed) (Tang & Munos 2025,
"On a few pitfalls in KL divergence gradient estimation for RL", arXiv:2506.09477; "A Comedy of
Estimators", arXiv:2512.21852):

| estimator | in the loss, per visited state: E_pi[grad k]      | in the reward: E_pi[k grad log pi]          |
| --------- | ------------------------------------------------- | ------------------------------------------- |
| k1        | E[grad log pi] = 0: no gradient at all (refused)  | grad KL(pi || pi_ref), the reverse KL        |
| k2        | E[log(pi/pi_ref) grad log pi] = grad KL(pi||pi_ref), reverse KL | not a KL gradient (grad E[k2] - grad KL(pi||pi_ref)) |
| k3        | -E[r grad log pi] = grad KL(pi_ref || pi), the forward KL (GRPO) | grad KL(pi||pi_ref) - grad KL(pi_ref||pi): no KL grad |
| abs       | E[sign(log pi/pi_ref) grad log pi] = grad sum_v abs(pi - pi_ref): total variation, not a KL | not a KL gradient |

For a whole response the two placements differ. A loss-placed estimator follows sum_t grad KL_t at the
states the samples visited, with the distribution of those states held fixed: it ignores how a token
changes the states (and so the KL) after it. Only the reward placement credits each token with the KL
terms from itself on (a reward-to-go), which makes k1 in the reward the exact policy gradient of
-coef * KL(pi || pi_ref) of the whole response. Exact enumeration on a tiny model (every 4-token response
over 3 tokens; `python -m rlvr.compare.kl_placement`, docs/studies/kl_placement/kl_gradients.txt): the
expected gradient of k1 in the reward equals the response-level reverse-KL gradient to float32 rounding
(relative error 4e-7 to 9e-7); k2 in the loss equals the per-state reverse KL's and is 7-13 % off the
response-level reverse KL's; k3 in the loss equals the per-state forward KL's and is 16-72 % off the
response-level forward KL's (the larger errors the farther pi is from pi_ref). `kl_gradient(estimator,
placement)` returns the table's verdict as text (shown by `rlvr presets`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from rlvr.core.masked import as_bool_mask, check_same_shape, require
from rlvr.core.registry import Registry

KLEstimatorFn = Callable[[Tensor, Tensor], Tensor]
KL_ESTIMATORS: Registry[KLEstimatorFn] = Registry("KL estimator")


@KL_ESTIMATORS.register("k1")
def k1(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """logp - ref_logp."""
    return logprobs - ref_logprobs


@KL_ESTIMATORS.register("k2")
def k2(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """0.5 * (logp - ref_logp)^2."""
    return 0.5 * (logprobs - ref_logprobs).square()


@KL_ESTIMATORS.register("k3")
def k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """exp(ref_logp - logp) - (ref_logp - logp) - 1 (>= 0 because e^x >= 1 + x)."""
    log_ratio = ref_logprobs - logprobs
    # expm1 keeps the small-|x| regime accurate: (e^x - 1) - x without the cancellation of e^x - 1.
    return torch.expm1(log_ratio) - log_ratio


@KL_ESTIMATORS.register("abs")
def abs_kl(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """|logp - ref_logp|."""
    return (logprobs - ref_logprobs).abs()


def kl_divergence(
    logprobs: Tensor,
    ref_logprobs: Tensor,
    estimator: str,
    *,
    clamp: float | None = None,
    loss_mask: Tensor | None = None,
) -> Tensor:
    """Per-token estimate [N, T] of KL(pi || pi_ref) with the named estimator (see the module docstring).

    clamp: bound the estimate to [-clamp, clamp] (verl clamps its k3 to +-10 for stability); the
        gradient is zero where the bound is active. None leaves it exact.
    loss_mask: when given, the estimate is 0 where the mask is False and inf/nan log-probs there cannot
        reach the values or the gradient.
    """
    require("kl_divergence", logprobs=logprobs, ref_logprobs=ref_logprobs)
    check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs, loss_mask=loss_mask)
    fn = KL_ESTIMATORS[estimator]
    if clamp is not None and not clamp > 0:
        raise ValueError(f"clamp must be > 0 (the estimate is bounded to [-clamp, clamp]) or None, got {clamp}")
    if loss_mask is not None:
        mask = as_bool_mask(loss_mask)
        zero = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
        logprobs = torch.where(mask, logprobs, zero)
        ref_logprobs = torch.where(mask, ref_logprobs, zero)
    kl = fn(logprobs, ref_logprobs)
    if clamp is not None:
        kl = kl.clamp(min=-clamp, max=clamp)
    if loss_mask is not None:
        kl = torch.where(mask, kl, torch.zeros((), dtype=kl.dtype, device=kl.device))
    return kl


_KL_GRADIENTS = {
    ("k1", "loss"): "none: k1 in the loss has zero expected gradient (refused)",
    ("k2", "loss"): "reverse KL(pi||pi_ref) per visited state",
    ("k3", "loss"): "forward KL(pi_ref||pi) per visited state",
    ("abs", "loss"): "total variation sum|pi - pi_ref| per visited state (not a KL)",
    ("k1", "reward"): "reverse KL(pi||pi_ref) of the whole response",
    ("k2", "reward"): "biased: not the gradient of a KL",
    ("k3", "reward"): "biased: grad KL(pi||pi_ref) - grad KL(pi_ref||pi)",
    ("abs", "reward"): "biased: not the gradient of a KL",
}


def kl_gradient(estimator: str, placement: str) -> str:
    """Which divergence's gradient the KL term follows in expectation (see the module docstring)."""
    KL_ESTIMATORS[estimator]  # unknown names raise the registry's error
    if placement not in ("loss", "reward"):
        raise ValueError(f"KL placement must be 'loss' or 'reward', got {placement!r}")
    return _KL_GRADIENTS[(estimator, placement)]


def adaptive_kl_coef(
    coef: float, observed_kl: float, target_kl: float, horizon: float, n_steps: int
) -> float:
    """One update of the adaptive KL coefficient (Ziegler et al. 2019, "Fine-Tuning Language Models from
    Human Preferences", arXiv:1909.08593, section 2.2):

        error = clip(observed_kl / target_kl - 1, -0.2, 0.2)
        coef  = coef * (1 + error * n_steps / horizon)

    `observed_kl` is the measured KL of the last batch (a float: the trainer reads it off the metrics),
    `n_steps` the number of samples (or steps) since the last update, `horizon` the time scale.
    """
    if not target_kl > 0:
        raise ValueError(f"target_kl must be > 0, got {target_kl}")
    if not horizon > 0:
        raise ValueError(f"horizon must be > 0, got {horizon}")
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    if coef < 0:
        raise ValueError(f"coef must be >= 0, got {coef}")
    error = min(max(float(observed_kl) / target_kl - 1.0, -0.2), 0.2)
    return float(coef) * (1.0 + error * n_steps / horizon)
