"""Shaping: DAPO's overlong penalty (hand values at every boundary) and dynamic-sampling group filter;
Differential Smoothing (hand values, the exact expected gradient by enumeration, bad input)."""

from __future__ import annotations

import random

import pytest
import torch

from rlvr.core.shaping import differential_smoothing, filter_groups, group_reward_std, overlong_penalty


def test_overlong_penalty_hand_values_and_boundaries():
    # max_len 20, cache_len 4: free up to 16, then (16 - L) / 4 down to -1 at L = 20, -1 beyond
    lengths = torch.tensor([0, 15, 16, 17, 18, 19, 20, 21, 100])
    want = torch.tensor([0.0, 0.0, 0.0, -0.25, -0.5, -0.75, -1.0, -1.0, -1.0])
    got = overlong_penalty(lengths, max_len=20, cache_len=4)
    assert got.dtype == torch.float32
    assert torch.equal(got, want)


def test_overlong_penalty_with_cache_equal_to_max_len_and_cache_of_one():
    # cache_len = max_len: the ramp starts at 0 -> -L / 10
    got = overlong_penalty(torch.tensor([0, 1, 5, 10, 11]), 10, 10)
    assert torch.equal(got, torch.tensor([0.0, -0.1, -0.5, -1.0, -1.0]))
    # cache_len = 1: a hard step at max_len
    assert overlong_penalty(torch.tensor([9, 10, 11]), 10, 1).tolist() == [0.0, -1.0, -1.0]


def test_overlong_penalty_matches_the_piecewise_definition():
    rng = random.Random(0)
    for _ in range(50):
        max_len = rng.randint(1, 300)
        cache_len = rng.randint(1, max_len)
        lengths = [rng.randint(0, max_len + 20) for _ in range(30)]
        got = overlong_penalty(torch.tensor(lengths), max_len, cache_len).tolist()
        for L, g in zip(lengths, got):
            if L <= max_len - cache_len:
                want = 0.0
            elif L <= max_len:
                want = ((max_len - cache_len) - L) / cache_len
            else:
                want = -1.0
            assert g == pytest.approx(want, abs=1e-7), (L, max_len, cache_len)


def test_overlong_penalty_rejects_bad_arguments():
    lengths = torch.tensor([3, 4])
    with pytest.raises(ValueError, match=r"cache_len must be an int in \(0, max_len\] = \(0, 10\]; got 0"):
        overlong_penalty(lengths, 10, 0)
    with pytest.raises(ValueError, match=r"cache_len must be an int in \(0, max_len\] = \(0, 10\]; got 11"):
        overlong_penalty(lengths, 10, 11)
    with pytest.raises(ValueError, match=r"max_len must be a positive int; got 0"):
        overlong_penalty(lengths, 0, 1)
    with pytest.raises(ValueError, match=r"response_lengths must be >= 0; got \[-2\]"):
        overlong_penalty(torch.tensor([3, -2]), 10, 2)
    with pytest.raises(ValueError, match=r"response_lengths must hold integer token counts; got dtype torch.float32"):
        overlong_penalty(torch.tensor([3.0]), 10, 2)
    with pytest.raises(ValueError, match=r"response_lengths must be a \[N\] tensor; got shape \[1, 2\]"):
        overlong_penalty(torch.tensor([[3, 4]]), 10, 2)


def test_filter_groups_keeps_only_groups_with_spread():
    # groups (ids non-contiguous, interleaved): 7 -> (1, 0) mixed: keep; 2 -> (1, 1): drop;
    # 9 -> (0, 0, 0): drop; 4 -> (0.5, 0.5, 0.25): keep; 5 -> a single sample: drop
    group_ids = torch.tensor([7, 2, 9, 7, 4, 2, 9, 4, 9, 4, 5])
    rewards = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.5, 1.0, 0.0, 0.5, 0.0, 0.25, 1.0])
    keep = filter_groups(rewards, group_ids)
    assert keep.dtype == torch.bool
    assert keep.tolist() == [True, False, False, True, True, False, False, True, False, True, False]


def test_filter_groups_uses_exact_equality_by_default():
    # tiny but real spread is kept; atol widens "equal"
    rewards = torch.tensor([0.1, 0.1 + 1e-12, 0.3, 0.3], dtype=torch.float64)
    group_ids = torch.tensor([0, 0, 1, 1])
    assert filter_groups(rewards, group_ids).tolist() == [True, True, False, False]
    assert filter_groups(rewards, group_ids, atol=1e-9).tolist() == [False, False, False, False]
    # equal values whose float mean is not exactly themselves are still "equal" (no std noise)
    assert not filter_groups(torch.tensor([0.1, 0.1, 0.1], dtype=torch.float64), torch.tensor([3, 3, 3])).any()


def test_filter_groups_matches_a_loop():
    rng = random.Random(1)
    ids = [rng.choice([11, 42, 5, 8, 1000]) for _ in range(60)]
    rewards = [float(rng.choice([0, 1])) if rng.random() < 0.8 else rng.random() for _ in ids]
    keep = filter_groups(torch.tensor(rewards), torch.tensor(ids)).tolist()
    for i, g in enumerate(ids):
        members = [rewards[j] for j in range(len(ids)) if ids[j] == g]
        assert keep[i] == (max(members) != min(members))


def test_group_reward_std():
    # group 0: (0, 1) -> Bessel std sqrt(0.5); group 1: (2, 4, 6) -> sqrt((4 + 0 + 4) / 2) = 2; group 2: one -> 0
    std = group_reward_std(torch.tensor([0.0, 2.0, 1.0, 4.0, 6.0, 3.0], dtype=torch.float64),
                           torch.tensor([0, 1, 0, 1, 1, 2]))
    torch.testing.assert_close(std, torch.tensor([0.5**0.5, 2.0, 0.5**0.5, 2.0, 2.0, 0.0], dtype=torch.float64),
                               rtol=0, atol=1e-15)


def test_group_functions_reject_bad_input():
    with pytest.raises(ValueError, match=r"rewards and group_ids must both be \[N\]; got rewards \[3\], group_ids \[2\]"):
        filter_groups(torch.zeros(3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"rewards contain 1 non-finite values \(nan/inf\) at indices \[1\]"):
        filter_groups(torch.tensor([0.0, float("nan")]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match=r"group_ids must be an integer tensor \[N\]; got dtype torch.float32"):
        group_reward_std(torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match=r"atol must be >= 0"):
        filter_groups(torch.zeros(2), torch.tensor([0, 0]), atol=-1.0)


# ---------------------------------------------------------------------------------------------
# Differential Smoothing


def test_differential_smoothing_hand_values():
    # correct rows: A - gamma_p * logp; wrong rows: A + gamma_n * logp; the same shift on every valid token
    adv = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -1.0, 0.0], [2.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, True, True], [True, True, False], [True, False, False]])
    logp = torch.tensor([-3.0, -0.5, -4.0, 0.0])
    correct = torch.tensor([True, True, False, False])
    got = differential_smoothing(adv, mask, logp, correct, gamma_p=0.5, gamma_n=0.25)
    want = torch.tensor([[1.0 + 1.5] * 3, [0.25] * 3, [-1.0 - 1.0, -1.0 - 1.0, 0.0], [2.0, 0.0, 0.0]])
    assert torch.equal(got, want)


def test_differential_smoothing_zero_gammas_is_the_identity_and_padding_stays_zero():
    g = torch.Generator().manual_seed(0)
    adv = torch.randn(6, 5, generator=g)
    mask = torch.rand(6, 5, generator=g) > 0.3
    adv = torch.where(mask, adv, torch.zeros(()))
    logp = -torch.rand(6, generator=g) * 10
    correct = torch.rand(6, generator=g) > 0.5
    assert torch.equal(differential_smoothing(adv, mask, logp, correct, gamma_p=0.0, gamma_n=0.0), adv)
    out = differential_smoothing(adv, mask, logp, correct, gamma_p=0.3, gamma_n=0.1)
    assert bool((out[~mask] == 0).all())
    # gamma_n = 0 (the default): wrong responses untouched; correct ones only rise
    only_p = differential_smoothing(adv, mask, logp, correct, gamma_p=0.3)
    assert torch.equal(only_p[~correct], adv[~correct])
    assert bool((only_p[correct][mask[correct]] > adv[correct][mask[correct]]).all())


def test_differential_smoothing_takes_no_gradient_through_the_log_probs():
    logp = torch.tensor([-1.0, -2.0], requires_grad=True)
    out = differential_smoothing(torch.zeros(2, 2), torch.ones(2, 2, dtype=torch.bool), logp,
                                 torch.tensor([True, False]), gamma_p=1.0, gamma_n=1.0)
    assert not out.requires_grad


def _sequence_policy(theta1, theta2):
    """All 9 sequences y = (a, b) over a 3-token vocabulary and their log pi(y) under an autoregressive
    softmax policy: pi(a) = softmax(theta1)[a], pi(b | a) = softmax(theta2[a])[b]."""
    first, second = torch.log_softmax(theta1, -1), torch.log_softmax(theta2, -1)
    seqs = [(a, b) for a in range(3) for b in range(3)]
    return seqs, torch.stack([first[a] + second[a, b] for a, b in seqs])


@pytest.mark.parametrize("gamma_p,gamma_n", [(0.3, 0.0), (0.0, 0.2), (0.4, 0.15)])
def test_differential_smoothing_expected_gradient_is_a_restricted_entropy_gradient(gamma_p, gamma_n):
    # E_y[shift(y) grad log pi(y)], enumerated exactly over every sequence, equals
    # grad[gamma_p (H_C + P(C)) - gamma_n (H_W + P(W))] with H_S = -sum_{y in S} pi log pi: the shaping
    # is an entropy bonus on the correct set C and an entropy penalty on the wrong set W.
    g = torch.Generator().manual_seed(1)
    theta1 = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    theta2 = torch.randn(3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    seqs, logp = _sequence_policy(theta1, theta2)
    correct = torch.tensor([a == b for a, b in seqs])  # C: the three "repeat the token" sequences
    pi = logp.exp()
    # token-level advantages of two-token responses, all starting at 0 (the shaping term alone)
    shaped = differential_smoothing(torch.zeros(9, 2, dtype=torch.float64), torch.ones(9, 2, dtype=torch.bool),
                                    logp.detach(), correct, gamma_p=gamma_p, gamma_n=gamma_n)
    # the pg surrogate with per-token advantages: sum_t A_t log pi_t = A * log pi(y) (the same A on each token)
    surrogate = (pi.detach() * shaped[:, 0] * logp).sum()
    got = torch.autograd.grad(surrogate, (theta1, theta2))
    seqs, logp = _sequence_policy(theta1, theta2)
    pi = logp.exp()
    objective = (gamma_p * (-(pi * logp)[correct].sum() + pi[correct].sum())
                 - gamma_n * (-(pi * logp)[~correct].sum() + pi[~correct].sum()))
    want = torch.autograd.grad(objective, (theta1, theta2))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert float(want[0].abs().sum() + want[1].abs().sum()) > 1e-3  # not a trivially zero gradient


def test_differential_smoothing_rejects_bad_input():
    adv, mask = torch.zeros(2, 2), torch.ones(2, 2, dtype=torch.bool)
    logp, correct = torch.tensor([-1.0, -1.0]), torch.tensor([True, False])
    with pytest.raises(ValueError, match="gamma_p must be a float >= 0"):
        differential_smoothing(adv, mask, logp, correct, gamma_p=-0.1)
    with pytest.raises(ValueError, match="gamma_n must be a float >= 0"):
        differential_smoothing(adv, mask, logp, correct, gamma_p=0.1, gamma_n=float("nan"))
    with pytest.raises(ValueError, match="log-probabilities, <= 0"):
        differential_smoothing(adv, mask, torch.tensor([-1.0, 0.5]), correct, gamma_p=0.1)
    with pytest.raises(ValueError, match="seq_logprobs"):
        differential_smoothing(adv, mask, torch.tensor([-1.0, float("nan")]), correct, gamma_p=0.1)
    with pytest.raises(ValueError, match="correct \\[N\\] bool"):
        differential_smoothing(adv, mask, logp, torch.tensor([1, 0]), gamma_p=0.1)
    with pytest.raises(ValueError, match="loss_mask must be boolean"):
        differential_smoothing(adv, mask.float() * 0.5, logp, correct, gamma_p=0.1)
