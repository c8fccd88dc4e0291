"""Policy losses (per token, to be minimised), the critic's clipped value loss and the SFT loss.

Every policy loss maps `logprobs` (current policy, with gradient), `old_logprobs` (the policy that
produced the data), `advantages` and `loss_mask`, all [N, T], to a per-token loss [N, T] that is 0
where the mask is False, plus detached 0-dim metrics. Aggregation to a scalar is a separate step
(`rlvr.core.aggregation.aggregate`). With r = exp(logp - old_logp) the probability ratio:

| name       | per-token loss                                                        | source                   |
| ---------- | --------------------------------------------------------------------- | ------------------------ |
| `pg`       | -A logp                                                               | REINFORCE, Williams 1992 |
| `ppo_clip` | max(-A r, -A clip(r, 1-el, 1+eh)); for A < 0 also min(., -A c)        | PPO, DAPO, dual-clip     |
| `gspo`     | ppo_clip on the sequence ratio, token form                            | GSPO                     |
| `cispo`    | -sg(clip(r, 1-el, 1+eh)) A logp                                       | MiniMax-M1               |
| `clip_cov` | ppo_clip, with a few high-covariance tokens' gradients cut            | Cui et al. 2025          |
| `kl_cov`   | -A r, plus coef abs(log r) on the highest-covariance tokens           | Cui et al. 2025          |

`old_logprobs` and `advantages` are constants (detached here). Masked positions are zeroed before any
arithmetic, so inf/nan there reach neither the values nor the gradients.

Metrics of every policy loss: `clip_frac_low` / `clip_frac_high` (fraction of valid tokens where the
lower / upper clip is active, i.e. cuts the gradient, or for CISPO truncates the weight), `approx_kl`
(masked mean of the k3 estimate of KL(old || new), exp(log r) - 1 - log r), `ratio_mean` (masked mean
of the token ratio r), plus loss-specific ones named in each docstring. The ratios are not clamped:
a valid token with |log r| beyond ~88 overflows float32, which signals a bug upstream, not noise.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated

import torch
from annotated_types import Ge, Gt, Le, Lt
from torch import Tensor

from rlvr.core.aggregation import aggregate
from rlvr.core.masked import as_bool_mask, check_same_shape, masked_mean, require
from rlvr.core.registry import Registry

PolicyLossFn = Callable[..., tuple[Tensor, dict[str, Tensor]]]
POLICY_LOSSES: Registry[PolicyLossFn] = Registry("policy loss")
"""Each loss declares its options once, as keyword-only parameters with defaults (the papers') and
constraints (`annotated_types` metadata, which the config schema turns into validation: rlvr.config
builds `algorithm.loss` from these signatures). Adding a loss is one registered function."""

# Constraints of loss options, read by the config schema (and checked again at call time).
Fraction = Annotated[float, Gt(0), Lt(1)]
"""In (0, 1): clip_low of a ratio clip (the lower bound 1 - clip_low stays above 0)."""
Positive = Annotated[float, Gt(0)]
Unit = Annotated[float, Gt(0), Le(1)]
"""In (0, 1]."""
NonNegative = Annotated[float, Ge(0)]


def policy_loss(
    name: str,
    *,
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    loss_mask: Tensor,
    **params: object,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token loss [N, T] (0 where `loss_mask` is False) and metrics of the named policy loss.

    `params` are the loss's own keyword options (clip_low, clip_high, clip_c, ...); an option the loss
    does not take is an error that lists the ones it does.
    """
    fn = POLICY_LOSSES[name]
    accepted = [p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise TypeError(
            f"policy loss {name!r} does not take {', '.join(unknown)}; "
            f"it takes: {', '.join(accepted) or 'no options'}"
        )
    require("policy_loss", logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, loss_mask=loss_mask)
    check_same_shape(
        logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, loss_mask=loss_mask
    )
    if logprobs.dim() != 2:
        raise ValueError(f"policy losses take [N, T] tensors, got shape {list(logprobs.shape)}")
    mask = as_bool_mask(loss_mask)
    zero = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    logprobs = torch.where(mask, logprobs, zero)
    old_logprobs = torch.where(mask, old_logprobs.detach(), zero)
    advantages = torch.where(mask, advantages.detach(), zero)

    loss, metrics = fn(logprobs, old_logprobs, advantages, mask, **params)
    loss = torch.where(mask, loss, zero)
    log_ratio = (logprobs - old_logprobs).detach()
    metrics.setdefault("approx_kl", masked_mean(torch.expm1(log_ratio) - log_ratio, mask))
    metrics.setdefault("ratio_mean", masked_mean(torch.exp(log_ratio), mask))
    return loss, {key: value.detach() for key, value in metrics.items()}


# --- parameter checks -------------------------------------------------------------------------------


def _check_clip(clip_low: float | None, clip_high: float, *, low_may_be_none: bool = False) -> None:
    if clip_low is None:
        if not low_may_be_none:
            raise ValueError("clip_low must be a number in [0, 1]")
    elif not 0 <= clip_low <= 1:
        raise ValueError(f"clip_low must be in [0, 1] (the lower bound is 1 - clip_low >= 0), got {clip_low}")
    if not clip_high >= 0:
        raise ValueError(f"clip_high must be >= 0 (the upper bound is 1 + clip_high), got {clip_high}")


def _check_fraction(name: str, value: float) -> None:
    if not 0 < value <= 1:
        raise ValueError(f"{name} must be in (0, 1] (a fraction of the valid tokens), got {value}")


# --- shared pieces ----------------------------------------------------------------------------------


def _frac(condition: Tensor, mask: Tensor, like: Tensor) -> Tensor:
    """Fraction of the valid tokens where `condition` holds, in the dtype of `like`."""
    return masked_mean(condition.to(like.dtype), mask)


def _clipped_surrogate(
    ratio: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float,
    clip_high: float,
    clip_c: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high)), and for A < 0 with dual clip min(that, -A c)."""
    clipped = ratio.clamp(1 - clip_low, 1 + clip_high)
    loss = torch.maximum(-advantages * ratio, -advantages * clipped)
    r = ratio.detach()
    metrics = {
        # The clipped branch is the larger one (and constant in r) exactly in these two cases.
        "clip_frac_high": _frac((advantages > 0) & (r > 1 + clip_high), mask, r),
        "clip_frac_low": _frac((advantages < 0) & (r < 1 - clip_low), mask, r),
    }
    if clip_c is not None:
        # For A < 0 the PPO branch is -A max(r, 1 - clip_low); it exceeds -A c (> -A) iff r > c.
        loss = torch.where(advantages < 0, torch.minimum(loss, -advantages * clip_c), loss)
        metrics["clip_frac_dual"] = _frac((advantages < 0) & (r > clip_c), mask, r)
    return loss, metrics


def _rank(keys: Tensor, *, descending: bool) -> Tensor:
    """Rank (0 = first) of every element of `keys` in sorted order; ties keep their flat index order."""
    flat = keys.flatten()
    order = torch.argsort(flat, descending=descending, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(flat.numel(), device=flat.device)
    return rank.view(keys.shape)


def _covariance(logprobs: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """Per-token centred product (A - mean A) (logp - mean logp), means over the valid tokens (detached)."""
    lp = logprobs.detach()
    return (advantages - masked_mean(advantages, mask)) * (lp - masked_mean(lp, mask))


def _count_to_select(mask: Tensor, fraction: float) -> Tensor:
    """max(floor(fraction * number of valid tokens), 1), as a tensor (no host synchronisation)."""
    return (mask.sum() * fraction).floor().clamp(min=1)


# --- the losses -------------------------------------------------------------------------------------


def _check_pg(*, off_policy: bool = False, **_) -> list[str]:
    if off_policy:
        return ["the pg loss has no importance ratio, so updates after the first mini-batch would be off-policy "
                "without correction; use loss ppo_clip (or cispo) with train.epochs>1 or train.mini_batches>1"]
    return []


@POLICY_LOSSES.register("pg", check=_check_pg)
def pg(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor) -> tuple[Tensor, dict]:
    """Plain REINFORCE surrogate -A logp (Williams 1992): gradient -A grad logp, exact on-policy.

    `old_logprobs` only feeds the metrics; there is no clipping, so both clip fractions are 0.
    """
    zero = _frac(torch.zeros_like(mask), mask, logprobs)
    return -advantages * logprobs, {"clip_frac_low": zero, "clip_frac_high": zero}


@POLICY_LOSSES.register("ppo_clip")
def ppo_clip(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: Fraction = 0.2,
    clip_high: Positive = 0.2,
    clip_c: Annotated[float, Gt(1)] | None = None,
) -> tuple[Tensor, dict]:
    """PPO's clipped surrogate (Schulman et al. 2017, arXiv:1707.06347, Eq. 7), negated:

        l = max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high)),  r = exp(logp - old_logp)

    Asymmetric bounds are DAPO's clip-higher (Yu et al. 2025, arXiv:2503.14476: clip_high = 0.28).
    clip_c (> 1): dual clip (Ye et al. 2020, "Mastering Complex Control in MOBA Games with Deep
    Reinforcement Learning", arXiv:1912.09729): for A < 0, l = min(l, -A c), which bounds the
    loss of a negative-advantage token whose ratio has grown large. Extra metric: clip_frac_dual.
    """
    _check_clip(clip_low, clip_high)
    if clip_c is not None and not clip_c > 1:
        raise ValueError(f"clip_c must be > 1 (dual clip bounds -A r by -A c for A < 0) or None, got {clip_c}")
    ratio = torch.exp(logprobs - old_logprobs)
    return _clipped_surrogate(ratio, advantages, mask, clip_low, clip_high, clip_c)


def _check_gspo(*, aggregation: str = "", **_) -> list[str]:
    if aggregation == "token_mean":
        return ["the gspo loss is a sequence-level objective; token_mean would weight sequences by length. "
                "Use aggregation=seq_mean_token_mean"]
    return []


@POLICY_LOSSES.register("gspo", check=_check_gspo)
def gspo(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: Fraction = 3e-4,
    clip_high: Positive = 4e-4,
) -> tuple[Tensor, dict]:
    """GSPO (Zheng et al. 2025, "Group Sequence Policy Optimization", arXiv:2507.18071), token form:

        s_i  = exp((1/|y_i|) sum_{t valid} (logp_it - old_logp_it))      (geometric-mean ratio)
        s_it = sg[s_i] * exp(logp_it - sg[logp_it])                      (the paper's GSPO-token)
        l_it = max(-A_it s_it, -A_it clip(s_it, 1 - clip_low, 1 + clip_high))

    s_it equals s_i in value, and its gradient is s_i grad logp_it; averaged over the tokens of a
    sequence (aggregation `seq_mean_token_mean`) this is exactly the gradient of the sequence-level
    objective min(s_i A_i, clip(s_i) A_i) when the advantage is constant along the sequence. The
    defaults 3e-4 / 4e-4 are the paper's. A row with no valid token has s_i = 1 and contributes nothing.
    Extra metric: seq_ratio_mean (mean of s_i over rows with a valid token).
    """
    _check_clip(clip_low, clip_high)
    log_ratio = logprobs - old_logprobs  # 0 at masked positions (zeroed by policy_loss)
    counts = mask.sum(dim=-1, keepdim=True)  # [N, 1]
    seq_log_ratio = log_ratio.sum(dim=-1, keepdim=True) / counts.clamp(min=1).to(log_ratio.dtype)
    # The constant is added last so that its value is exact: (lp - sg[lp]) is exactly 0.
    token_log_ratio = (logprobs - logprobs.detach()) + seq_log_ratio.detach()
    loss, metrics = _clipped_surrogate(torch.exp(token_log_ratio), advantages, mask, clip_low, clip_high)
    rows = counts.squeeze(-1) > 0
    metrics["seq_ratio_mean"] = masked_mean(torch.exp(seq_log_ratio.detach()).squeeze(-1), rows)
    return loss, metrics


@POLICY_LOSSES.register("cispo")
def cispo(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: Unit | None = None,
    clip_high: Positive = 4.0,
) -> tuple[Tensor, dict]:
    """CISPO (MiniMax 2025, "MiniMax-M1", arXiv:2506.13585, the CISPO objective), negated:

        l = -sg(clip(r, 1 - clip_low, 1 + clip_high)) A logp

    The weight is clipped but every token keeps a gradient (PPO's clip zeroes it). The paper sets no
    lower bound ("setting eps_low^IS to a large value"): clip_low=None does the same. It does not give
    eps_high^IS; the default 4.0 (weights at most 5) is the cap that open implementations ship
    (SkyRL, citing ScaleRL, Khatri et al. 2025, arXiv:2510.13786). Here the clip fractions count the
    valid tokens whose weight is truncated from above / below, whatever the sign of A.
    """
    _check_clip(clip_low, clip_high, low_may_be_none=True)
    ratio = torch.exp(logprobs - old_logprobs).detach()
    lower = None if clip_low is None else 1 - clip_low
    weight = ratio.clamp(min=lower, max=1 + clip_high)
    low = torch.zeros_like(mask) if lower is None else ratio < lower
    return -weight * advantages * logprobs, {
        "clip_frac_high": _frac(ratio > 1 + clip_high, mask, ratio),
        "clip_frac_low": _frac(low, mask, ratio),
    }


def _check_clip_cov(*, options: dict | None = None, **_) -> list[str]:
    lb, ub = (options or {}).get("clip_cov_lb", 1.0), (options or {}).get("clip_cov_ub", 5.0)
    if not lb < ub:
        return [f"algorithm.loss.clip_cov_lb ({lb}) must be below clip_cov_ub ({ub})"]
    return []


@POLICY_LOSSES.register("clip_cov", needs=("covariance_selection",), check=_check_clip_cov)
def clip_cov(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: Unit = 1.0,
    clip_high: Positive = 1.0,
    clip_cov_ratio: Unit = 2e-4,
    clip_cov_lb: float = 1.0,
    clip_cov_ub: float = 5.0,
    generator: torch.Generator | None = None,
    selected: Tensor | None = None,
) -> tuple[Tensor, dict]:
    """Clip-Cov (Cui et al. 2025, "The Entropy Mechanism of Reinforcement Learning for Reasoning
    Language Models", arXiv:2505.22617, section 4): cut the gradient of a few tokens whose
    covariance between log-prob and advantage is high, since those drive the entropy collapse.

        cov_it   = (A_it - mean A) (logp_it - mean logp)          means over the valid tokens
        eligible = valid, not already clipped by PPO, clip_cov_lb < cov_it < clip_cov_ub
        selected = a uniformly random subset of the eligible tokens, of size
                   min(#eligible, max(floor(clip_cov_ratio * #valid), 1))
        l_it     = 0 if selected else ppo_clip(clip_low, clip_high)

    As in the authors' code (and verl's compute_policy_loss_clip_cov) a selected token's loss is 0 in
    value as well as in gradient. Defaults follow the paper's recipe (r = 2e-4, omega_low = 1,
    omega_high = 5) and its scripts' clip_ratio_low = clip_ratio_high = 1, which leaves the ratio in
    [0, 2] and makes Clip-Cov, not PPO's clip, the main constraint; verl instead shares the actor's
    PPO clip (0.2). The selection is over the tensors given; a trainer that splits a mini-batch into
    micro-batches computes it once over the whole mini-batch with `covariance_selection` and passes
    each micro-batch its slice as `selected`, so the selected fraction does not depend on the
    micro-batch size (verl selects per micro-batch). `generator` makes the random subset reproducible.
    Extra metric: clip_cov_frac (fraction of valid tokens selected).
    """
    _check_clip(clip_low, clip_high)
    _check_fraction("clip_cov_ratio", clip_cov_ratio)
    if not clip_cov_lb < clip_cov_ub:
        raise ValueError(f"clip_cov_lb must be < clip_cov_ub, got {clip_cov_lb} and {clip_cov_ub}")
    ratio = torch.exp(logprobs - old_logprobs)
    loss, metrics = _clipped_surrogate(ratio, advantages, mask, clip_low, clip_high)
    if selected is None:
        selected = _clip_cov_select(logprobs, ratio, advantages, mask, clip_low, clip_high, clip_cov_ratio,
                                    clip_cov_lb, clip_cov_ub, generator)
    else:
        selected = _given_selection(selected, mask)
    loss = torch.where(selected, torch.zeros_like(loss), loss)
    metrics["clip_cov_frac"] = _frac(selected, mask, ratio.detach())
    return loss, metrics


def _clip_cov_select(logprobs, ratio, advantages, mask, clip_low, clip_high, ratio_frac, lb, ub, generator):
    r = ratio.detach()
    clipped_by_ppo = ((advantages > 0) & (r > 1 + clip_high)) | ((advantages < 0) & (r < 1 - clip_low))
    cov = _covariance(logprobs, advantages, mask)
    eligible = mask & ~clipped_by_ppo & (cov > lb) & (cov < ub)
    # Random keys in [0, 1) for eligible tokens and 2 for the rest: the first k in sorted order are a
    # uniformly random k-subset of the eligible tokens, with no data-dependent shape or .item().
    device = generator.device if generator is not None else logprobs.device
    noise = torch.rand(mask.shape, generator=generator, device=device).to(logprobs.device)
    keys = torch.where(eligible, noise, torch.full_like(noise, 2.0))
    return eligible & (_rank(keys, descending=False) < _count_to_select(mask, ratio_frac))


def _given_selection(selected: Tensor, mask: Tensor) -> Tensor:
    if selected.shape != mask.shape:
        raise ValueError(f"selected {list(selected.shape)} must have the shape of loss_mask {list(mask.shape)}")
    return selected.bool() & mask


@POLICY_LOSSES.register("kl_cov", needs=("covariance_selection",))
def kl_cov(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    kl_cov_ratio: Unit = 2e-3,
    kl_cov_coef: NonNegative = 1.0,
    selected: Tensor | None = None,
) -> tuple[Tensor, dict]:
    """KL-Cov (Cui et al. 2025, arXiv:2505.22617, section 4): a KL penalty on the tokens of highest
    covariance between log-prob and advantage, on top of the unclipped surrogate:

        cov_it   = (A_it - mean A) (logp_it - mean logp)          means over the valid tokens
        selected = the max(floor(kl_cov_ratio * #valid), 1) valid tokens of largest cov
        l_it     = -A_it r_it + (kl_cov_coef |logp_it - old_logp_it| if selected else 0)

    Defaults: the paper's k = 2e-3 (0.2%, its Qwen2.5-7B setting; 2e-4 for 32B, which is verl's
    default) and beta = 1. Ties in cov are broken by position (first wins). The selection uses the
    statistics of the tensors given, or `selected` (see `clip_cov` and `covariance_selection`: a
    trainer selects over the whole mini-batch, not per micro-batch as verl does). Extra metrics: kl_cov_frac (fraction of
    valid tokens penalised) and abs_kl (masked mean |log r|).
    """
    _check_fraction("kl_cov_ratio", kl_cov_ratio)
    if not kl_cov_coef >= 0:
        raise ValueError(f"kl_cov_coef must be >= 0, got {kl_cov_coef}")
    log_ratio = logprobs - old_logprobs
    cov = _covariance(logprobs, advantages, mask)
    if selected is None:
        selected = _kl_cov_select(cov, mask, kl_cov_ratio)
    else:
        selected = _given_selection(selected, mask)
    penalty = kl_cov_coef * log_ratio.abs()
    loss = -advantages * torch.exp(log_ratio) + torch.where(selected, penalty, torch.zeros_like(penalty))
    zero = _frac(torch.zeros_like(mask), mask, cov)
    return loss, {
        "clip_frac_low": zero,
        "clip_frac_high": zero,
        "kl_cov_frac": _frac(selected, mask, cov),
        "abs_kl": masked_mean(log_ratio.detach().abs(), mask),
    }


def _kl_cov_select(cov: Tensor, mask: Tensor, ratio_frac: float) -> Tensor:
    keys = torch.where(mask, cov, torch.full_like(cov, -torch.inf))
    return mask & (_rank(keys, descending=True) < _count_to_select(mask, ratio_frac))


COVARIANCE_LOSSES = POLICY_LOSSES.having("covariance_selection")
"""The losses registered with `needs=("covariance_selection",)`: they choose their tokens over a whole mini-batch."""


def covariance_selection(
    name: str,
    *,
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    loss_mask: Tensor,
    generator: torch.Generator | None = None,
    **params: object,
) -> Tensor:
    """The tokens [N, T] (bool) that `clip_cov` or `kl_cov` would select on this whole batch.

    For a mini-batch split into micro-batches: compute it once on the mini-batch (detached current
    log-probs), then pass each micro-batch its rows as the loss's `selected` option; the selection,
    and so the loss, is then the one a single pass over the mini-batch computes. `params` are the
    loss's options (those that do not affect the selection are ignored).
    """
    if name not in COVARIANCE_LOSSES:
        raise ValueError(f"covariance_selection applies to {', '.join(COVARIANCE_LOSSES)}, not {name!r}")
    require("covariance_selection", logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages,
            loss_mask=loss_mask)
    check_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, loss_mask=loss_mask)
    mask = as_bool_mask(loss_mask)
    zero = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    lp = torch.where(mask, logprobs.detach(), zero)
    old = torch.where(mask, old_logprobs.detach(), zero)
    adv = torch.where(mask, advantages.detach(), zero)
    if name == "kl_cov":
        ratio_frac = float(params.get("kl_cov_ratio", 2e-3))
        _check_fraction("kl_cov_ratio", ratio_frac)
        return _kl_cov_select(_covariance(lp, adv, mask), mask, ratio_frac)
    clip_low, clip_high = float(params.get("clip_low", 1.0)), float(params.get("clip_high", 1.0))
    ratio_frac = float(params.get("clip_cov_ratio", 2e-4))
    _check_fraction("clip_cov_ratio", ratio_frac)
    return _clip_cov_select(lp, torch.exp(lp - old), adv, mask, clip_low, clip_high, ratio_frac,
                            float(params.get("clip_cov_lb", 1.0)), float(params.get("clip_cov_ub", 5.0)), generator)


# --- critic and SFT ---------------------------------------------------------------------------------


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    loss_mask: Tensor,
    *,
    clip_range: float | None = 0.2,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO's clipped value loss per token [N, T] (0 where `loss_mask` is False):

        l = 0.5 max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2)

    (the clipped value objective of the PPO2 baselines code, also in verl and TRL; it is not in the PPO
    paper). clip_range=None gives the plain 0.5 (V - R)^2. `old_values` and `returns` are constants.
    Metric: vf_clip_frac, the fraction of valid tokens where the clipped term is the larger (its
    gradient is then 0).
    """
    require("value_loss", values=values, old_values=old_values, returns=returns, loss_mask=loss_mask)
    check_same_shape(values=values, old_values=old_values, returns=returns, loss_mask=loss_mask)
    if clip_range is not None and not clip_range > 0:
        raise ValueError(f"clip_range must be > 0 or None (no clipping), got {clip_range}")
    mask = as_bool_mask(loss_mask)
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    values = torch.where(mask, values, zero)
    old_values = torch.where(mask, old_values.detach(), zero)
    returns = torch.where(mask, returns.detach(), zero)
    unclipped = (values - returns).square()
    if clip_range is None:
        loss, clip_frac = 0.5 * unclipped, _frac(torch.zeros_like(mask), mask, values)
    else:
        # Inside the clip range the clipped value is V itself (old + (V - old) would differ from V by
        # rounding and make the clipped branch win ties at random).
        outside = (values - old_values).detach().abs() > clip_range
        clipped_values = torch.where(outside, old_values + (values - old_values).clamp(-clip_range, clip_range), values)
        clipped = (clipped_values - returns).square()
        loss = 0.5 * torch.maximum(unclipped, clipped)
        clip_frac = _frac(outside & (clipped.detach() > unclipped.detach()), mask, values)
    return torch.where(mask, loss, zero), {"vf_clip_frac": clip_frac.detach()}


def sft_loss(logprobs: Tensor, loss_mask: Tensor, mode: str = "token_mean", **aggregate_kwargs) -> Tensor:
    """Masked negative log-likelihood -logp of the target tokens, aggregated with `mode`
    (token_mean, seq_mean_token_mean, ...; num_tokens / num_sequences / constant as for `aggregate`)."""
    require("sft_loss", logprobs=logprobs, loss_mask=loss_mask)
    check_same_shape(logprobs=logprobs, loss_mask=loss_mask)
    mask = as_bool_mask(loss_mask)
    nll = torch.where(mask, -logprobs, torch.zeros((), dtype=logprobs.dtype, device=logprobs.device))
    return aggregate(nll, mask, mode, **aggregate_kwargs)
