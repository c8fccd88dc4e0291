"""Advantage estimators: rewards (and optionally values) in, per-token advantages and returns out.

Every estimator is registered in `ADVANTAGE_ESTIMATORS` under its name and takes the same tensor
arguments; `compute_advantages(name, ..., **options)` is the one entry point. Each estimator declares
its own options (gamma, lam, eps, whiten) once, as keyword-only parameters with defaults and
`annotated_types` constraints, exactly as the policy losses do; the config schema builds
`algorithm.advantage` from those signatures, and an option an estimator does not take is an error.
Inputs are validated by the registered wrapper itself, so calling `ADVANTAGE_ESTIMATORS[name](...)`
directly is just as safe.

Shapes: `rewards` [N] (outcome reward of each sequence), `loss_mask` [N, T] bool (True where a
response token counts), `group_ids` [N] integer (sequences of one prompt share a value; values are
arbitrary, need not be sorted or contiguous), `values` [N, T], `token_rewards` [N, T],
`baseline_rewards` [N]. Both outputs are [N, T], exactly 0 where `loss_mask` is False, computed
without autograd (advantages are constants for the policy loss).

Masked tokens are transparent to the token-level recursions (reward-to-go, GAE): they contribute
nothing and do not break the chain, so appended padding changes nothing and an interior masked
span (e.g. a tool's output in a multi-turn rollout) is stepped over, as in verl's GAE.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any

import torch
from annotated_types import Ge, Gt, Le
from torch import Tensor

from rlvr.core.masked import as_bool_mask, check_same_shape, masked_sum, masked_whiten, require
from rlvr.core.registry import Registry

ADVANTAGE_ESTIMATORS: Registry = Registry("advantage estimator")

_MAX_LISTED = 10

# Constraints of estimator options, read by the config schema and checked again at call time.
Discount = Annotated[float, Ge(0), Le(1)]
"""In [0, 1]: a discount (gamma) or GAE's lambda."""
Positive = Annotated[float, Gt(0)]


# ----------------------------------------------------------------------------------------------
# validation helpers (shared with rlvr.core.shaping)


def check_finite(name: str, x: Tensor, mask: Tensor | None = None, hint: str = "check the reward function") -> None:
    """Raise ValueError listing where `x` is nan/inf (only where `mask` is True, when given)."""
    bad = ~torch.isfinite(x)
    if mask is not None:
        bad = bad & mask
    if not bool(bad.any()):
        return
    where = bad.nonzero()
    listed = [tuple(i) if len(i) > 1 else i[0] for i in where[:_MAX_LISTED].tolist()]
    more = f" (first {_MAX_LISTED} shown)" if where.shape[0] > _MAX_LISTED else ""
    raise ValueError(
        f"{name} contain {where.shape[0]} non-finite values (nan/inf) at indices {listed}{more}; {hint}"
    )


def group_index(group_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(unique ids [G], inverse [N] in [0, G), counts [G]) for arbitrary integer group ids."""
    return torch.unique(group_ids, return_inverse=True, return_counts=True)


def group_mean(scores: Tensor, inverse: Tensor, counts: Tensor) -> Tensor:
    """Per-group mean of `scores` [N] -> [G], by index_add (no loop over groups)."""
    sums = scores.new_zeros(counts.shape[0]).index_add_(0, inverse, scores)
    return sums / counts.to(scores.dtype)


def _as_float(x: Tensor) -> Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _check_vector(name: str, x: Tensor, n: int, mask_shape: list[int]) -> None:
    if x.dim() != 1 or x.shape[0] != n:
        raise ValueError(f"{name} must have shape [N] = [{n}] to match loss_mask {mask_shape}; got {list(x.shape)}")


def _check_min_group_size(name: str, ids: Tensor, counts: Tensor) -> None:
    small = counts < 2
    if bool(small.any()):
        which = small.nonzero().flatten()
        first = int(which[0])
        more = f" (and {which.numel() - 1} more such groups)" if which.numel() > 1 else ""
        raise ValueError(
            f"{name} needs at least 2 samples per group; group {ids[first].tolist()} has "
            f"{counts[first].tolist()}{more}"
        )


def _validate(
    name: str,
    needs: tuple[str, ...],
    *,
    rewards,
    loss_mask,
    group_ids,
    values,
    baseline_rewards,
    token_rewards,
    penalties=None,
) -> dict:
    if rewards is None:
        raise TypeError(f"advantage estimator {name!r}: rewards is required (a [N] tensor); got None")
    if not isinstance(loss_mask, Tensor) or loss_mask.dim() != 2:
        shape = list(loss_mask.shape) if isinstance(loss_mask, Tensor) else type(loss_mask).__name__
        raise ValueError(f"loss_mask must be a [N, T] tensor; got {shape}")
    mask = as_bool_mask(loss_mask)
    n, shape = mask.shape[0], list(mask.shape)
    device = mask.device
    rewards = _as_float(torch.as_tensor(rewards, device=device))
    _check_vector("rewards", rewards, n, shape)
    check_finite("rewards", rewards)
    for arg, given in (("group_ids", group_ids), ("values", values), ("baseline_rewards", baseline_rewards)):
        if arg in needs and given is None:
            raise ValueError(f"advantage estimator {name!r} needs {arg}; got None")
    if group_ids is not None:
        group_ids = torch.as_tensor(group_ids, device=device)
        _check_vector("group_ids", group_ids, n, shape)
        if group_ids.is_floating_point() or group_ids.is_complex():
            raise ValueError(f"group_ids must be an integer tensor [N]; got dtype {group_ids.dtype}")
    if baseline_rewards is not None:
        baseline_rewards = _as_float(torch.as_tensor(baseline_rewards, device=device))
        _check_vector("baseline_rewards", baseline_rewards, n, shape)
        check_finite("baseline_rewards", baseline_rewards)
    if token_rewards is not None:
        token_rewards = _as_float(torch.as_tensor(token_rewards, device=device))
        check_same_shape(token_rewards=token_rewards, loss_mask=mask)
        check_finite("token_rewards", token_rewards, mask)
    if penalties is not None:
        penalties = _as_float(torch.as_tensor(penalties, device=device))
        check_same_shape(penalties=penalties, loss_mask=mask)
        check_finite("penalties", penalties, mask, hint="check the reference log-probs (KL penalty)")
    if values is not None:
        values = _as_float(torch.as_tensor(values, device=device).detach())
        check_same_shape(values=values, loss_mask=mask)
        check_finite("values", values, mask, hint="check the value model (critic)")
    return dict(
        rewards=rewards.detach(),
        loss_mask=mask,
        group_ids=group_ids,
        values=values,
        baseline_rewards=None if baseline_rewards is None else baseline_rewards.detach(),
        token_rewards=None if token_rewards is None else token_rewards.detach(),
        penalties=None if penalties is None else penalties.detach(),
    )


_HOLDS = {">=": lambda v, b: v >= b, ">": lambda v, b: v > b, "<=": lambda v, b: v <= b}


def _bounds(meta: Any) -> list[tuple[str, Any]]:
    """An annotated_types constraint (Ge, Gt, Le) as (operator, bound) pairs."""
    return [(op, getattr(meta, attr)) for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<=")) if hasattr(meta, attr)]


def estimator_options(fn: Callable) -> dict[str, Any]:
    """The options an estimator declares: its keyword-only parameters that have a default (name -> default)."""
    params = inspect.signature(inspect.unwrap(fn)).parameters.values()
    return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY and p.default is not p.empty}


def _check_options(name: str, declared: dict[str, Any], hints: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """`given` checked against the options an estimator declares (names, and constraints in `hints`), filled
    with its defaults."""
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise TypeError(
            f"advantage estimator {name!r} does not take {', '.join(unknown)}; "
            f"it takes: {', '.join(declared) or 'no options'}"
        )
    for key, value in given.items():
        rules = [rule for meta in getattr(hints.get(key), "__metadata__", ()) for rule in _bounds(meta)]
        if not all(_HOLDS[op](value, bound) for op, bound in rules):
            raise ValueError(f"{key} must be {' and '.join(f'{op} {bound}' for op, bound in rules)}; got {value}")
    return {**declared, **given}


def _estimator(name: str, needs: tuple[str, ...] = ()) -> Callable:
    """Register `fn` under `name`, wrapped with input validation and torch.no_grad().

    `penalties` reach only an estimator that takes them (a `penalties` parameter: it places them itself);
    for every other one they are folded into the per-token rewards, token_rewards + penalties."""

    def decorator(fn: Callable) -> Callable:
        declared = estimator_options(fn)  # read once, at registration
        hints = typing.get_type_hints(fn, include_extras=True)
        places_penalties = "penalties" in inspect.signature(fn).parameters

        @functools.wraps(fn)
        def wrapped(
            *,
            rewards: Tensor,
            loss_mask: Tensor,
            group_ids: Tensor | None = None,
            values: Tensor | None = None,
            baseline_rewards: Tensor | None = None,
            token_rewards: Tensor | None = None,
            penalties: Tensor | None = None,
            **options: Any,
        ) -> tuple[Tensor, Tensor]:
            options = _check_options(name, declared, hints, options)
            kwargs = _validate(
                name,
                needs,
                rewards=rewards,
                loss_mask=loss_mask,
                group_ids=group_ids,
                values=values,
                baseline_rewards=baseline_rewards,
                token_rewards=token_rewards,
                penalties=penalties,
            )
            if not places_penalties:
                penalties = kwargs.pop("penalties")
                if penalties is not None:
                    given = kwargs["token_rewards"]
                    base = outcome_to_token_rewards(kwargs["rewards"], kwargs["loss_mask"]) if given is None else given
                    kwargs["token_rewards"] = base + penalties
            with torch.no_grad():
                return fn(**kwargs, **options)

        ADVANTAGE_ESTIMATORS.register(name, needs=needs)(wrapped)
        return wrapped

    return decorator


def compute_advantages(
    estimator: str,
    *,
    rewards: Tensor,
    loss_mask: Tensor,
    group_ids: Tensor | None = None,
    values: Tensor | None = None,
    baseline_rewards: Tensor | None = None,
    token_rewards: Tensor | None = None,
    penalties: Tensor | None = None,
    **options: Any,
) -> tuple[Tensor, Tensor]:
    """(advantages [N, T], returns [N, T]) from the estimator registered as `estimator`.

    `token_rewards` are per-token rewards (an outcome on the last token, or an environment's per-step
    rewards); `penalties` [N, T] are per-token terms placed in the reward that are not rewards to rank,
    such as the KL penalty -beta * KL. Every estimator credits them as a reward-to-go; `grpo` adds them
    after its group normalisation (unscaled), the others treat token_rewards + penalties as the rewards.

    Which inputs each estimator reads (the others are accepted and ignored), and its own `options`:

    | estimator             | reads                                             | options              | returns          |
    | --------------------- | ------------------------------------------------- | -------------------- | ---------------- |
    | reinforce             | rewards (or sum of token_rewards)                 |                      | = advantages     |
    | grpo                  | rewards / token_rewards, group_ids, penalties     | eps                  | = advantages     |
    | dr_grpo, rloo         | rewards / token_rewards, group_ids                |                      | = advantages     |
    | remax                 | rewards / token_rewards, baseline_rewards         |                      | = advantages     |
    | reinforce_pp          | token_rewards (default: rewards on last token)    | gamma, whiten        | reward-to-go     |
    | reinforce_pp_baseline | rewards, group_ids, token_rewards                 | whiten               | before whitening |
    | gae                   | values, token_rewards (default as above)          | gamma, lam, whiten   | A + V            |

    `eps` is only grpo's std guard; whitening uses masked_whiten's own 1e-8 under the square root.
    Unknown names raise the registry's KeyError, which lists the known ones; an option the estimator
    does not declare raises TypeError listing the ones it does (`estimator_options`).
    """
    return ADVANTAGE_ESTIMATORS[estimator](
        rewards=rewards,
        loss_mask=loss_mask,
        group_ids=group_ids,
        values=values,
        baseline_rewards=baseline_rewards,
        token_rewards=token_rewards,
        penalties=penalties,
        **options,
    )


# ----------------------------------------------------------------------------------------------
# building blocks


def outcome_to_token_rewards(rewards: Tensor, loss_mask: Tensor) -> Tensor:
    """[N, T] zeros with rewards[i] on the last True token of row i (rows with no True token stay 0)."""
    require("outcome_to_token_rewards", rewards=rewards, loss_mask=loss_mask)
    mask = as_bool_mask(loss_mask)
    if mask.dim() != 2:
        raise ValueError(f"loss_mask must be a [N, T] tensor; got {list(mask.shape)}")
    rewards = _as_float(torch.as_tensor(rewards, device=mask.device))
    _check_vector("rewards", rewards, mask.shape[0], list(mask.shape))
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask, positions, -1).amax(dim=1)  # [N]; -1 when the row has no valid token
    out = torch.zeros(mask.shape, dtype=rewards.dtype, device=mask.device)
    has_any = last >= 0
    rows = torch.arange(mask.shape[0], device=mask.device)
    out[rows, last.clamp(min=0)] = torch.where(has_any, rewards, torch.zeros_like(rewards))
    return out


def _sequence_scores(rewards: Tensor, token_rewards: Tensor | None, loss_mask: Tensor) -> Tensor:
    """The scalar return of each sequence: `rewards`, or the sum of `token_rewards` over valid tokens."""
    if token_rewards is None:
        return rewards
    return masked_sum(token_rewards, loss_mask, dim=1)


def _credit(
    rewards: Tensor, token_rewards: Tensor | None, loss_mask: Tensor, baseline: Tensor, scale: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """A_it = (G_it - baseline_i) / scale_i over valid tokens; G_it the return credited to token t.

    Without `token_rewards`, G_it = r_i on every token (an outcome reward). With them (the outcome on
    the last token plus per-token terms such as a -beta * KL penalty), G_it = sum_{s >= t} token_rewards_is,
    the reward-to-go: a token is credited with the penalties from itself on, never with those of the
    tokens before it, which its choice cannot change (the causality argument of REINFORCE; with a KL
    penalty it makes k1 in the reward the exact gradient of the sequence's reverse KL). The baseline and
    scale are per-sequence statistics of the whole returns G_i0 (see each estimator).
    """
    zero = torch.zeros((), dtype=rewards.dtype, device=rewards.device)
    if token_rewards is None:
        to_go = rewards[:, None].expand(loss_mask.shape)
    else:
        to_go = _reverse_scan(token_rewards, loss_mask, 1.0)
    adv = to_go - baseline[:, None]
    if scale is not None:
        adv = adv / scale[:, None]
    out = torch.where(loss_mask, adv, zero)
    return out, out


def _broadcast(per_sequence: Tensor, loss_mask: Tensor) -> tuple[Tensor, Tensor]:
    zero = torch.zeros((), dtype=per_sequence.dtype, device=per_sequence.device)
    out = torch.where(loss_mask, per_sequence[:, None], zero)
    return out, out


def _reverse_scan(x: Tensor, loss_mask: Tensor, decay: float) -> Tensor:
    """y_t = x_t + decay * y_{t'} over valid tokens, t' the next valid token after t (y = 0 beyond).

    Masked tokens neither add to nor break the chain; the result is 0 on them. For decay == 1 this
    is a reverse cumulative sum; otherwise a loop over T (vectorised over N), as the recursion is
    sequential in t.
    """
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    x = torch.where(loss_mask, x, zero)
    if decay == 1.0:
        y = x.flip(1).cumsum(1).flip(1)
    else:
        running = x.new_zeros(x.shape[0])
        columns = []
        for t in reversed(range(x.shape[1])):
            running = torch.where(loss_mask[:, t], x[:, t] + decay * running, running)
            columns.append(running)
        y = torch.stack(columns[::-1], dim=1) if columns else x.clone()
    return torch.where(loss_mask, y, zero)


# ----------------------------------------------------------------------------------------------
# outcome estimators: a baseline (and scale) per sequence from the sequence returns; each token is
# credited with its return-to-go (`_credit`), which is the outcome reward itself when there are no
# per-token terms. returns == advantages.


@_estimator("reinforce")
def reinforce(*, rewards, loss_mask, token_rewards, **_) -> tuple[Tensor, Tensor]:
    """A_it = G_it, no baseline (Williams 1992, REINFORCE): the outcome r_i on every token, or with
    `token_rewards` (e.g. a KL penalty folded into the reward) the reward-to-go of `_credit`.
    """
    zero = torch.zeros_like(rewards)
    return _credit(rewards, token_rewards, loss_mask, zero)


@_estimator("grpo", needs=("group_ids",))
def grpo(*, rewards, loss_mask, group_ids, token_rewards, penalties, eps: Positive = 1e-6,
         **_) -> tuple[Tensor, Tensor]:
    """A_it = (G_it - mean_g G) / (std_g G + eps) + P_it, std with Bessel's correction, G the sequence returns,
    P_it = sum_{s >= t} penalties_is.

    GRPO (Shao et al. 2024, DeepSeekMath, sec. 4.1.2, outcome supervision); the Bessel-corrected std
    (torch.std's default) follows the DeepSeekMath / verl reference code. A group whose returns are all
    equal gets A = P (0 without penalties). Groups of one are rejected (the corrected std is undefined).
    With per-step `token_rewards` (an environment's rewards) each token is credited with its reward-to-go
    G_it, scaled by the group statistics of the returns (`_credit`).

    `penalties` (the KL penalty -beta * KL placed in the reward) are added after the group normalisation,
    unscaled, as a reward-to-go, as OpenRLHF does (group-normalised outcome, then the per-token KL, then
    returns-to-go). Folding them into the returns before normalising would divide the penalty by a std
    that it alone creates: in a group whose outcomes are all equal std ~ beta * KL, and a 0.01-sized
    penalty became advantages of order 1-10. Uses: rewards, group_ids, eps, token_rewards, penalties.
    """
    # eps > 0 (its Positive constraint): a group of equal rewards has std 0, and its centred rewards are
    # rounding noise (mean of three 0.1s is not 0.1), so dividing by std + 0 would turn that noise into +-0.58.
    scores = _sequence_scores(rewards, token_rewards, loss_mask)
    ids, inverse, counts = group_index(group_ids)
    _check_min_group_size("grpo", ids, counts)
    mean = group_mean(scores, inverse, counts)  # [G]
    centred = scores - mean[inverse]
    sq = scores.new_zeros(counts.shape[0]).index_add_(0, inverse, centred**2)
    std = (sq / (counts - 1).to(scores.dtype)).sqrt()
    if token_rewards is None:
        # Centre first, then divide: bit-for-bit the reference's (r - mean) / (std + eps).
        adv, _ = _broadcast(centred / (std[inverse] + eps), loss_mask)
    else:
        adv, _ = _credit(rewards, token_rewards, loss_mask, mean[inverse], std[inverse] + eps)
        # With per-step rewards the reward-to-go differs from the return, so a group of equal returns (std 0)
        # would get (G_t - mean) / eps: zero it, as the outcome case is, since the group ranks nothing.
        high = scores.new_full((counts.shape[0],), float("-inf")).scatter_reduce(0, inverse, scores, reduce="amax")
        low = scores.new_full((counts.shape[0],), float("inf")).scatter_reduce(0, inverse, scores, reduce="amin")
        adv = torch.where((high == low)[inverse][:, None], torch.zeros((), dtype=adv.dtype, device=adv.device), adv)
    if penalties is not None:
        adv = adv + _reverse_scan(penalties, loss_mask, 1.0)
    return adv, adv


@_estimator("dr_grpo", needs=("group_ids",))
def dr_grpo(*, rewards, loss_mask, group_ids, token_rewards, **_) -> tuple[Tensor, Tensor]:
    """A_it = G_it - mean_g G: GRPO without the std division (Liu et al. 2025, "Understanding R1-Zero-Like
    Training", Dr. GRPO). A group of one gets A = 0. Uses: rewards, group_ids, token_rewards (as in
    `grpo`). The paper's other change (no per-sequence length normalisation) is the aggregation's.
    """
    scores = _sequence_scores(rewards, token_rewards, loss_mask)
    _, inverse, counts = group_index(group_ids)
    return _credit(rewards, token_rewards, loss_mask, group_mean(scores, inverse, counts)[inverse])


@_estimator("rloo", needs=("group_ids",))
def rloo(*, rewards, loss_mask, group_ids, token_rewards, **_) -> tuple[Tensor, Tensor]:
    """A_it = G_it - (sum_g G - G_i) / (G - 1): leave-one-out baseline, = G/(G-1) * (r_i - mean_g r)
    for outcome rewards.

    RLOO (Ahmadian et al. 2024, "Back to Basics", eq. 6; Kool et al. 2019). Groups of one are rejected.
    Uses: rewards, group_ids, token_rewards (the baseline is the other samples' KL-penalised returns
    r - beta * KL of Ahmadian et al. and TRL's RLOOTrainer; each token gets its reward-to-go, `_credit`).
    """
    scores = _sequence_scores(rewards, token_rewards, loss_mask)
    ids, inverse, counts = group_index(group_ids)
    _check_min_group_size("rloo", ids, counts)
    sums = scores.new_zeros(counts.shape[0]).index_add_(0, inverse, scores)
    baseline = (sums[inverse] - scores) / (counts[inverse] - 1).to(scores.dtype)
    return _credit(rewards, token_rewards, loss_mask, baseline)


@_estimator("remax", needs=("baseline_rewards",))
def remax(*, rewards, loss_mask, baseline_rewards, token_rewards, **_) -> tuple[Tensor, Tensor]:
    """A_it = G_it - b_i, b_i the return of the greedy response to the same prompt (Li et al. 2023,
    ReMax, Algorithm 1).

    `baseline_rewards` [N] is the greedy rollout's return, already repeated for each sample of the
    prompt, shaped like the samples' (overlong penalty, -beta * its summed KL: the trainer does this).
    Uses: rewards, baseline_rewards, token_rewards (reward-to-go, `_credit`).
    """
    return _credit(rewards, token_rewards, loss_mask, baseline_rewards)


# ----------------------------------------------------------------------------------------------
# token-level estimators


@_estimator("reinforce_pp")
def reinforce_pp(
    *, rewards, loss_mask, token_rewards, gamma: Discount = 1.0, whiten: bool = True, **_
) -> tuple[Tensor, Tensor]:
    """REINFORCE++ (Hu 2025, arXiv 2501.03262, eqs. 8-10): reward-to-go, whitened over the batch.

    G_t = sum_{k >= t} gamma^(k - t) * token_rewards_k over valid tokens; A = (G - mean) / std over all
    valid tokens of the batch (Bessel-corrected std, eps 1e-8 under the square root; OpenRLHF uses the
    biased variance, a factor sqrt(M / (M - 1)) for M valid tokens). If `token_rewards` is None it is
    `outcome_to_token_rewards(rewards, loss_mask)`. returns = G (before whitening).
    Uses: rewards, token_rewards, gamma, whiten (False skips the whitening: plain reward-to-go).
    """
    if token_rewards is None:
        token_rewards = outcome_to_token_rewards(rewards, loss_mask)
    returns = _reverse_scan(token_rewards, loss_mask, gamma)
    advantages = masked_whiten(returns, loss_mask) if whiten else returns
    return advantages, returns


@_estimator("reinforce_pp_baseline", needs=("group_ids",))
def reinforce_pp_baseline(*, rewards, loss_mask, group_ids, token_rewards, whiten: bool = True, **_):
    """REINFORCE++-baseline (Hu 2025, arXiv 2501.03262): group-mean baseline, then batch whitening.

    A_t = whiten(r_i - mean_g r), the same value on every valid token before whitening. With
    `token_rewards` (the outcome on the last token plus per-token terms such as -beta * KL), we follow
    OpenRLHF's `reinforce_baseline` (the paper's own code): the group mean is taken over the outcome
    `rewards` only, and the per-token terms enter as a reward-to-go, i.e.
    G_t = sum_{k >= t} token_rewards_k - mean_g r, which equals r_i - mean_g r plus the KL terms still
    ahead of t. (verl instead subtracts the group mean of the summed token_rewards and broadcasts.)
    It has no discount: OpenRLHF forces gamma = 1 for this estimator (use `reinforce_pp` for a discounted
    reward-to-go). A group of one gets 0 before whitening. returns = G (before whitening).
    Uses: rewards, group_ids, token_rewards, whiten.
    """
    _, inverse, counts = group_index(group_ids)
    baseline = group_mean(rewards, inverse, counts)[inverse]  # [N]
    if token_rewards is None:
        token_rewards = outcome_to_token_rewards(rewards, loss_mask)
    to_go = _reverse_scan(token_rewards, loss_mask, 1.0)
    zero = torch.zeros((), dtype=to_go.dtype, device=to_go.device)
    returns = torch.where(loss_mask, to_go - baseline[:, None], zero)
    advantages = masked_whiten(returns, loss_mask) if whiten else returns
    return advantages, returns


@_estimator("gae", needs=("values",))
def gae(
    *, rewards, loss_mask, values, token_rewards, gamma: Discount = 1.0, lam: Discount = 1.0, whiten: bool = True, **_
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, eqs. 11-16) over the valid tokens.

    delta_t = r_t + gamma * V_{t+1} - V_t, with V = 0 beyond the last valid token;
    A_t = delta_t + gamma * lam * A_{t+1}; returns = A + V (before whitening, the critic's target).
    A is whitened over the valid tokens of the batch unless `whiten=False` (as verl / TRL do).
    `token_rewards` default: `outcome_to_token_rewards(rewards, loss_mask)`. Masked tokens are skipped:
    t + 1 means the next valid token. Uses: rewards, values, token_rewards, gamma, lam, whiten.
    """
    if token_rewards is None:
        token_rewards = outcome_to_token_rewards(rewards, loss_mask)
    zero = torch.zeros((), dtype=token_rewards.dtype, device=token_rewards.device)
    r = torch.where(loss_mask, token_rewards, zero)
    v = torch.where(loss_mask, values.to(r.dtype), zero)
    next_value = r.new_zeros(r.shape[0])
    next_adv = r.new_zeros(r.shape[0])
    columns = []
    for t in reversed(range(r.shape[1])):
        valid = loss_mask[:, t]
        delta = r[:, t] + gamma * next_value - v[:, t]
        next_adv = torch.where(valid, delta + gamma * lam * next_adv, next_adv)
        next_value = torch.where(valid, v[:, t], next_value)
        columns.append(next_adv)
    advantages = torch.stack(columns[::-1], dim=1) if columns else r.clone()
    advantages = torch.where(loss_mask, advantages, zero)
    returns = torch.where(loss_mask, advantages + v, zero)
    if whiten:
        advantages = masked_whiten(advantages, loss_mask)
    return advantages, returns
