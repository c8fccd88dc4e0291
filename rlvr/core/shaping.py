"""Reward shaping and batch filtering from DAPO (Yu et al. 2025, arXiv 2503.14476)."""

from __future__ import annotations

import torch
from torch import Tensor

from rlvr.core.advantages import check_finite, group_index, group_mean
from rlvr.core.masked import as_bool_mask, require


def overlong_penalty(response_lengths: Tensor, max_len: int, cache_len: int) -> Tensor:
    """DAPO soft overlong punishment (Yu et al. 2025, sec. 3.4, eq. 13), added to the reward. [N] -> [N] float.

        R(L) = 0                                    if L <= max_len - cache_len
             = ((max_len - cache_len) - L) / cache_len   if max_len - cache_len < L <= max_len
             = -1                                   if L > max_len

    The penalty grows linearly from 0 to -1 over the last `cache_len` tokens of the budget. A response
    cut off at the length limit has L = max_len and gets -1. The paper has no scale factor; multiply the
    result to get one (verl's `overlong_penalty_factor`).

    >>> overlong_penalty(torch.tensor([10, 12, 14, 16, 20]), max_len=16, cache_len=4).tolist()
    [0.0, 0.0, -0.5, -1.0, -1.0]
    """
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"max_len must be a positive int; got {max_len!r}")
    if isinstance(cache_len, bool) or not isinstance(cache_len, int) or not 0 < cache_len <= max_len:
        raise ValueError(f"cache_len must be an int in (0, max_len] = (0, {max_len}]; got {cache_len!r}")
    lengths = torch.as_tensor(response_lengths)
    if lengths.dim() != 1:
        raise ValueError(f"response_lengths must be a [N] tensor; got shape {list(lengths.shape)}")
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise ValueError(f"response_lengths must hold integer token counts; got dtype {lengths.dtype}")
    if bool((lengths < 0).any()):
        raise ValueError(f"response_lengths must be >= 0; got {lengths[lengths < 0][:10].tolist()}")
    soft_start = max_len - cache_len
    # Integers up to the division, so the boundaries are exact.
    ramp = (soft_start - lengths).to(torch.float64) / cache_len
    penalty = torch.where(lengths <= soft_start, torch.zeros_like(ramp), ramp)
    penalty = torch.where(lengths > max_len, torch.full_like(ramp, -1.0), penalty)
    return penalty.to(torch.float32)


def _validate_groups(rewards: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor]:
    for name, given in (("rewards", rewards), ("group_ids", group_ids)):
        if given is None:
            raise TypeError(f"{name} is required (a [N] tensor); got None")
    rewards = torch.as_tensor(rewards)
    group_ids = torch.as_tensor(group_ids, device=rewards.device)
    if rewards.dim() != 1 or group_ids.shape != rewards.shape:
        raise ValueError(
            f"rewards and group_ids must both be [N]; got rewards {list(rewards.shape)}, "
            f"group_ids {list(group_ids.shape)}"
        )
    if group_ids.is_floating_point() or group_ids.is_complex():
        raise ValueError(f"group_ids must be an integer tensor [N]; got dtype {group_ids.dtype}")
    rewards = rewards.to(torch.promote_types(rewards.dtype, torch.float32))
    check_finite("rewards", rewards)
    return rewards, group_ids


def filter_groups(rewards: Tensor, group_ids: Tensor, atol: float = 0.0) -> Tensor:
    """DAPO dynamic sampling (Yu et al. 2025, sec. 3.2): keep [N] bool, True for the samples of groups
    whose rewards are not all equal.

    A group whose samples all score the same gives every sample a zero group-relative advantage, so it
    only dilutes the batch. The paper's constraint is 0 < #correct < G, i.e. it filters on accuracy:
    pass the 0/1 correctness as `rewards` to follow it exactly; shaped rewards (e.g. with the overlong
    penalty) also keep groups whose only spread comes from the shaping, like verl with metric "score".
    "All equal" is tested as max - min <= atol per group; the default atol = 0
    is exact equality, which is what verifier rewards (0/1, or the same shaping applied to equal inputs)
    need. We use the spread max - min rather than the std > 0 test of verl's implementation, because
    the std of equal floats can come out as rounding noise (the mean of three 0.1s is not 0.1). A group
    of one sample has no spread and is dropped. The caller then samples more prompts until the batch
    is full (DAPO Algorithm 1).

    >>> filter_groups(torch.tensor([1., 0., 1., 1., 0., 0.]), torch.tensor([0, 0, 1, 1, 2, 2])).tolist()
    [True, True, False, False, False, False]
    """
    if not atol >= 0.0:
        raise ValueError(f"atol must be >= 0; got {atol}")
    rewards, group_ids = _validate_groups(rewards, group_ids)
    _, inverse, counts = group_index(group_ids)
    num_groups = counts.shape[0]
    high = rewards.new_full((num_groups,), float("-inf")).scatter_reduce(0, inverse, rewards, reduce="amax")
    low = rewards.new_full((num_groups,), float("inf")).scatter_reduce(0, inverse, rewards, reduce="amin")
    return ((high - low) > atol)[inverse]


def group_reward_std(rewards: Tensor, group_ids: Tensor) -> Tensor:
    """Per-sample std of its group's rewards, Bessel-corrected (0 for a group of one). [N] -> [N].

    A diagnostic for how much signal a batch carries (0 = the group teaches nothing).

    >>> group_reward_std(torch.tensor([0., 1., 2., 2.]), torch.tensor([0, 0, 1, 1])).tolist()
    [0.7071067690849304, 0.7071067690849304, 0.0, 0.0]
    """
    rewards, group_ids = _validate_groups(rewards, group_ids)
    _, inverse, counts = group_index(group_ids)
    centred = rewards - group_mean(rewards, inverse, counts)[inverse]
    sq = rewards.new_zeros(counts.shape[0]).index_add_(0, inverse, centred**2)
    var = sq / (counts - 1).clamp(min=1).to(rewards.dtype)
    return var.sqrt()[inverse]


def differential_smoothing(advantages: Tensor, loss_mask: Tensor, seq_logprobs: Tensor, correct: Tensor, *,
                           gamma_p: float, gamma_n: float = 0.0) -> Tensor:
    """Differential Smoothing (Gai, Zeng, Zhang, Raghunathan 2025, arXiv 2511.19942) as an advantage shaping.
    [N, T] advantages -> [N, T], every valid token of a sequence shifted by the same sequence-level term:

        A'_i = A_i - gamma_p * log pi_old(y_i)    if y_i is correct
        A'_i = A_i + gamma_n * log pi_old(y_i)    if y_i is wrong

    with log pi_old(y_i) = sum_t log pi_old(y_i,t | x_i, y_i,<t) (`seq_logprobs`, [N], a constant: no
    gradient flows through it). Since -log pi(y) > 0, a correct response gains more the less likely it
    is (its term is an entropy bonus restricted to correct responses: in expectation the shaped gradient
    of the correct term is gamma_p * grad(H_C + P(C)), with H_C = -sum_{y in C} pi log pi and P(C) = pi(C)),
    and a wrong response is pushed down more the likelier it is (-gamma_n * grad(H_W + P(W))); both
    identities are checked by exact enumeration in tests/core/test_shaping.py.

    This is the paper's practical DS-GRPO form (its Eq. 6): the shift is applied to the estimator's advantages,
    after any group normalisation, with the old policy's sequence log-probability, so a group of all-correct
    responses (zero GRPO advantage) still gets the smoothing term. The paper's Eq. 4 states the same idea as a
    reward modification with the base policy pi_base in place of pi_old. The paper's key observation is that
    the diversity fix is needed on the correct responses only (gamma_n = 0, the default here); gamma_p has no
    default (a recipe sets it).

    >>> adv = torch.tensor([[0.5, 0.5], [-0.5, 0.0]])
    >>> mask = torch.tensor([[True, True], [True, False]])
    >>> differential_smoothing(adv, mask, torch.tensor([-2.0, -1.0]), torch.tensor([True, False]),
    ...                        gamma_p=0.1, gamma_n=0.2).tolist()
    [[0.699999988079071, 0.699999988079071], [-0.699999988079071, 0.0]]
    """
    for name, value in (("gamma_p", gamma_p), ("gamma_n", gamma_n)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"{name} must be a float >= 0; got {value!r}")
    require("differential_smoothing", advantages=advantages, loss_mask=loss_mask, seq_logprobs=seq_logprobs,
            correct=correct)
    if advantages.dim() != 2 or loss_mask.shape != advantages.shape:
        raise ValueError(f"advantages [N, T] and a loss_mask of the same shape are needed; got "
                         f"{list(advantages.shape)} and {list(loss_mask.shape)}")
    loss_mask = as_bool_mask(loss_mask)
    n = advantages.shape[0]
    seq_logprobs, correct = torch.as_tensor(seq_logprobs), torch.as_tensor(correct)
    if seq_logprobs.shape != (n,) or correct.shape != (n,) or correct.dtype != torch.bool:
        raise ValueError(f"seq_logprobs [N] float and correct [N] bool are needed for N = {n}; got "
                         f"{list(seq_logprobs.shape)} and {list(correct.shape)} ({correct.dtype})")
    check_finite("seq_logprobs", seq_logprobs, hint="check the old-policy log-probs")
    if bool((seq_logprobs > 0).any()):
        raise ValueError(f"seq_logprobs are log-probabilities, <= 0; got {seq_logprobs.max().item():.4g}")
    lp = seq_logprobs.detach().to(advantages.dtype)
    shift = torch.where(correct, -gamma_p * lp, gamma_n * lp)  # [N]
    return torch.where(loss_mask, advantages + shift[:, None], torch.zeros_like(advantages))
