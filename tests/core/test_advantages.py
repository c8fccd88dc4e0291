"""Advantage estimators: hand-computed values, invariants, padding, a slow loop reference, errors."""

from __future__ import annotations

import math
import random
import statistics

import pytest
import torch

from rlvr.core.advantages import ADVANTAGE_ESTIMATORS, compute_advantages, estimator_options, outcome_to_token_rewards
from rlvr.core.masked import masked_whiten

F64 = torch.float64
EPS = 1e-6  # compute_advantages' default, used by grpo
WHITEN_EPS = 1e-8  # masked_whiten's default, used by reinforce_pp / reinforce_pp_baseline / gae

ALL_NAMES = {"reinforce", "grpo", "dr_grpo", "rloo", "remax", "reinforce_pp", "reinforce_pp_baseline", "gae"}


def mask_from_lengths(lengths, T):
    return torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]


def expected_outcome(per_seq, mask):
    """Broadcast a per-sequence list over the mask, 0 elsewhere."""
    return torch.tensor(per_seq, dtype=F64)[:, None] * mask


# Six sequences of two prompts; group ids non-contiguous and interleaved.
#   group 5 = samples 0, 2, 4 with rewards (1, 0, 2): mean 1, Bessel var (0 + 1 + 1) / 2 = 1, std 1
#   group 9 = samples 1, 3, 5 with rewards (0, 2, 4): mean 2, Bessel var (4 + 0 + 4) / 2 = 4, std 2
REWARDS = torch.tensor([1.0, 0.0, 0.0, 2.0, 2.0, 4.0], dtype=F64)
GROUPS = torch.tensor([5, 9, 5, 9, 5, 9])
MASK = mask_from_lengths([3, 2, 4, 1, 2, 3], 4)


def outcome(name, **kw):
    return compute_advantages(name, rewards=REWARDS, loss_mask=MASK, group_ids=GROUPS, **kw)


def test_registry_holds_exactly_the_documented_names():
    assert set(ADVANTAGE_ESTIMATORS) == ALL_NAMES


def test_reinforce_hand_values():
    adv, ret = outcome("reinforce")
    torch.testing.assert_close(adv, expected_outcome([1, 0, 0, 2, 2, 4], MASK), rtol=0, atol=0)
    assert torch.equal(ret, adv)


def test_grpo_hand_values():
    adv, ret = outcome("grpo")
    # (r - mean) / (std + eps): group 5 -> 0/(1+eps), -1/(1+eps), 1/(1+eps); group 9 -> -2/(2+eps), 0, 2/(2+eps)
    a, b = 1 / (1 + EPS), 2 / (2 + EPS)
    torch.testing.assert_close(adv, expected_outcome([0, -b, -a, 0, a, b], MASK), rtol=0, atol=1e-15)
    assert torch.equal(ret, adv)


def test_grpo_uses_bessel_corrected_std():
    # rewards (0, 1): mean 0.5, Bessel std sqrt(0.5) (population std would be 0.5)
    adv, _ = compute_advantages(
        "grpo", rewards=torch.tensor([0.0, 1.0], dtype=F64), loss_mask=torch.ones(2, 1, dtype=torch.bool),
        group_ids=torch.tensor([0, 0]), eps=1e-12,
    )
    torch.testing.assert_close(adv[:, 0], torch.tensor([-0.5, 0.5], dtype=F64) / math.sqrt(0.5), rtol=0, atol=1e-10)


def test_dr_grpo_hand_values():
    adv, ret = outcome("dr_grpo")
    # r - group mean: group 5 -> 0, -1, 1; group 9 -> -2, 0, 2
    torch.testing.assert_close(adv, expected_outcome([0, -2, -1, 0, 1, 2], MASK), rtol=0, atol=0)
    assert torch.equal(ret, adv)


def test_rloo_hand_values():
    adv, ret = outcome("rloo")
    # r_i - mean of the other two: s0 1-(0+2)/2=0, s2 0-(1+2)/2=-1.5, s4 2-(1+0)/2=1.5,
    # s1 0-(2+4)/2=-3, s3 2-(0+4)/2=0, s5 4-(0+2)/2=3
    torch.testing.assert_close(adv, expected_outcome([0, -3, -1.5, 0, 1.5, 3], MASK), rtol=0, atol=0)
    assert torch.equal(ret, adv)


def test_remax_hand_values():
    # greedy rollout reward: 1 for the prompt of group 5, 3 for group 9, repeated per sample
    baseline = torch.tensor([1.0, 3.0, 1.0, 3.0, 1.0, 3.0], dtype=F64)
    adv, ret = compute_advantages("remax", rewards=REWARDS, loss_mask=MASK, baseline_rewards=baseline)
    torch.testing.assert_close(adv, expected_outcome([0, -3, -1, -1, 1, 1], MASK), rtol=0, atol=0)
    assert torch.equal(ret, adv)


def test_outcome_estimators_credit_each_token_with_its_reward_to_go():
    """Guards a bug: with KL in the reward, a token is credited with the penalties from
    itself on (reward-to-go), not with the whole sequence's sum (the old code gave row 0 [1.0, 1.0])."""
    # token_rewards = outcome on the last token plus a per-token penalty: row 0 valid (-0.1, 1 - 0.2),
    # row 1 valid (0 - 0.3). Returns 0.7 and -0.3, so the leave-one-out baselines are -0.3 and 0.7;
    # reward-to-go: row 0 (0.7, 0.8), row 1 (-0.3) -> A = (1.0, 1.1) and (-1.0).
    mask = mask_from_lengths([2, 1], 3)
    token_rewards = torch.tensor([[-0.1, 0.8, 7.0], [-0.3, 5.0, 5.0]], dtype=F64)
    adv, _ = compute_advantages(
        "rloo", rewards=torch.tensor([1.0, 0.0], dtype=F64), loss_mask=mask, group_ids=torch.tensor([0, 0]),
        token_rewards=token_rewards,
    )
    expected = torch.tensor([[1.0, 1.1, 0.0], [-1.0, 0.0, 0.0]], dtype=F64)
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-15)
    # reinforce: the plain reward-to-go; remax: minus the greedy return
    adv, _ = compute_advantages("reinforce", rewards=torch.zeros(2, dtype=F64), loss_mask=mask, token_rewards=token_rewards)
    torch.testing.assert_close(adv, torch.tensor([[0.7, 0.8, 0.0], [-0.3, 0.0, 0.0]], dtype=F64), rtol=0, atol=1e-15)
    adv, _ = compute_advantages("remax", rewards=torch.zeros(2, dtype=F64), loss_mask=mask, token_rewards=token_rewards,
                                baseline_rewards=torch.tensor([0.5, -0.5], dtype=F64))
    torch.testing.assert_close(adv, torch.tensor([[0.2, 0.3, 0.0], [0.2, 0.0, 0.0]], dtype=F64), rtol=0, atol=1e-15)


def test_outcome_estimators_without_per_token_terms_are_unchanged_by_the_reward_to_go():
    """An outcome reward on the last token only: every token's reward-to-go is the outcome itself."""
    batch = random_batch(3)
    for name in ("reinforce", "grpo", "dr_grpo", "rloo", "remax"):
        plain = call(name, batch)
        tr = outcome_to_token_rewards(batch["rewards"], batch["loss_mask"])
        folded = compute_advantages(name, **{**batch, "token_rewards": tr})
        torch.testing.assert_close(folded[0], plain[0], rtol=0, atol=1e-12)


def test_reinforce_pp_hand_values():
    # gamma 0.5; row 0 valid (0.5, 0, 1): G2 = 1, G1 = 0 + 0.5*1 = 0.5, G0 = 0.5 + 0.5*0.5 = 0.75
    #            row 1 valid (0, 2), masked 9: G1 = 2, G0 = 0 + 0.5*2 = 1
    mask = mask_from_lengths([3, 2], 3)
    token_rewards = torch.tensor([[0.5, 0.0, 1.0], [0.0, 2.0, 9.0]], dtype=F64)
    adv, ret = compute_advantages(
        "reinforce_pp", rewards=torch.zeros(2, dtype=F64), loss_mask=mask, token_rewards=token_rewards, gamma=0.5
    )
    torch.testing.assert_close(ret, torch.tensor([[0.75, 0.5, 1.0], [1.0, 2.0, 0.0]], dtype=F64), rtol=0, atol=0)
    # whitening over the 5 valid returns: mean 5.25/5 = 1.05; deviations -0.3 -0.55 -0.05 / -0.05 0.95;
    # squares sum to 0.09 + 0.3025 + 0.0025 + 0.0025 + 0.9025 = 1.3; Bessel var 1.3/4 = 0.325
    dev = torch.tensor([[-0.3, -0.55, -0.05], [-0.05, 0.95, 0.0]], dtype=F64)
    torch.testing.assert_close(adv, dev / math.sqrt(0.325 + WHITEN_EPS), rtol=0, atol=1e-12)


def test_reinforce_pp_places_the_outcome_on_the_last_token_by_default():
    mask = mask_from_lengths([2, 3], 3)
    adv, ret = compute_advantages(
        "reinforce_pp", rewards=torch.tensor([1.0, 3.0], dtype=F64), loss_mask=mask, whiten=False
    )
    torch.testing.assert_close(ret, torch.tensor([[1.0, 1.0, 0.0], [3.0, 3.0, 3.0]], dtype=F64), rtol=0, atol=0)
    assert torch.equal(adv, ret)


def test_reinforce_pp_baseline_hand_values():
    # groups (0: rewards 1, 0 -> mean 0.5), (1: rewards 1, 1 -> mean 1); lengths 2, 1, 1, 2
    # before whitening: row0 (0.5, 0.5), row1 (-0.5), row2 (0), row3 (0, 0)
    mask = mask_from_lengths([2, 1, 1, 2], 2)
    adv, ret = compute_advantages(
        "reinforce_pp_baseline", rewards=torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=F64), loss_mask=mask,
        group_ids=torch.tensor([0, 0, 1, 1]),
    )
    torch.testing.assert_close(ret, torch.tensor([[0.5, 0.5], [-0.5, 0], [0, 0], [0, 0]], dtype=F64), rtol=0, atol=0)
    # 6 valid tokens, mean 0.5/6 = 1/12; deviations 5/12 5/12 -7/12 -1/12 -1/12 -1/12;
    # squares sum (25 + 25 + 49 + 1 + 1 + 1) / 144 = 102/144; Bessel var 102/144/5
    dev = torch.tensor([[5, 5], [-7, 0], [-1, 0], [-1, -1]], dtype=F64) / 12
    torch.testing.assert_close(adv, dev / math.sqrt(102 / 144 / 5 + WHITEN_EPS), rtol=0, atol=1e-12)


def test_reinforce_pp_baseline_with_per_token_terms_follows_openrlhf():
    # outcome rewards (1, 0), group mean 0.5; token_rewards = per-token -beta*KL plus the outcome on the last
    # token: row0 (-0.1, 1 - 0.2), row1 (-0.3, 0 - 0.4). Returns = reward-to-go - 0.5:
    # row0 (-0.1 + 0.8 - 0.5, 0.8 - 0.5) = (0.2, 0.3); row1 (-0.7 - 0.5, -0.4 - 0.5) = (-1.2, -0.9),
    # which is OpenRLHF's (r - mean) on the last token plus the KL terms still ahead.
    mask = torch.ones(2, 2, dtype=torch.bool)
    _, ret = compute_advantages(
        "reinforce_pp_baseline", rewards=torch.tensor([1.0, 0.0], dtype=F64), loss_mask=mask,
        group_ids=torch.tensor([3, 3]), token_rewards=torch.tensor([[-0.1, 0.8], [-0.3, -0.4]], dtype=F64),
    )
    torch.testing.assert_close(ret, torch.tensor([[0.2, 0.3], [-1.2, -0.9]], dtype=F64), rtol=0, atol=1e-15)


def test_gae_hand_values():
    gamma, lam = 0.9, 0.8  # gamma * lam = 0.72
    mask = mask_from_lengths([3, 2], 3)
    token_rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 5.0]], dtype=F64)  # 5.0 is masked
    values = torch.tensor([[0.5, 0.6, 0.7], [0.2, 0.4, 9.0]], dtype=F64)  # 9.0 is masked
    adv, ret = compute_advantages(
        "gae", rewards=torch.zeros(2, dtype=F64), loss_mask=mask, values=values, token_rewards=token_rewards,
        gamma=gamma, lam=lam, whiten=False,
    )
    # row 0: delta2 = 1 + 0.9*0 - 0.7 = 0.3; delta1 = 0 + 0.9*0.7 - 0.6 = 0.03; delta0 = 0.9*0.6 - 0.5 = 0.04
    #        A2 = 0.3; A1 = 0.03 + 0.72*0.3 = 0.246; A0 = 0.04 + 0.72*0.246 = 0.21712
    # row 1: delta1 = 1 + 0.9*0 - 0.4 = 0.6 (V beyond the last valid token is 0, not the masked 9.0)
    #        delta0 = 0.9*0.4 - 0.2 = 0.16; A1 = 0.6; A0 = 0.16 + 0.72*0.6 = 0.592
    expected = torch.tensor([[0.21712, 0.246, 0.3], [0.592, 0.6, 0.0]], dtype=F64)
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-15)
    # returns = A + V: (0.71712, 0.846, 1.0), (0.792, 1.0, 0)
    torch.testing.assert_close(ret, torch.tensor([[0.71712, 0.846, 1.0], [0.792, 1.0, 0.0]], dtype=F64), rtol=0, atol=1e-15)
    whitened, ret_w = compute_advantages(
        "gae", rewards=torch.zeros(2, dtype=F64), loss_mask=mask, values=values, token_rewards=token_rewards,
        gamma=gamma, lam=lam,
    )
    torch.testing.assert_close(whitened, masked_whiten(expected, mask), rtol=0, atol=1e-15)
    assert torch.equal(ret_w, ret)  # returns are taken before whitening


def test_gae_with_unit_gamma_lambda_and_zero_values_is_the_reward_to_go():
    torch.manual_seed(0)
    mask = mask_from_lengths([5, 3, 1, 4], 5)
    token_rewards = torch.randn(4, 5, dtype=F64)
    adv, ret = compute_advantages(
        "gae", rewards=torch.zeros(4, dtype=F64), loss_mask=mask, values=torch.zeros(4, 5, dtype=F64),
        token_rewards=token_rewards, whiten=False,
    )
    to_go = (token_rewards * mask).flip(1).cumsum(1).flip(1) * mask
    torch.testing.assert_close(adv, to_go, rtol=0, atol=1e-14)
    torch.testing.assert_close(ret, to_go, rtol=0, atol=1e-14)


def test_gae_lambda_zero_is_the_td_error_and_lambda_one_the_discounted_return_minus_value():
    torch.manual_seed(1)
    gamma, T = 0.7, 4
    mask = torch.ones(1, T, dtype=torch.bool)
    r, v = torch.randn(1, T, dtype=F64), torch.randn(1, T, dtype=F64)
    kw = dict(rewards=torch.zeros(1, dtype=F64), loss_mask=mask, values=v, token_rewards=r, gamma=gamma, whiten=False)
    td, _ = compute_advantages("gae", lam=0.0, **kw)
    next_v = torch.cat([v[:, 1:], torch.zeros(1, 1, dtype=F64)], dim=1)
    torch.testing.assert_close(td, r + gamma * next_v - v, rtol=0, atol=1e-14)
    mc, _ = compute_advantages("gae", lam=1.0, **kw)
    disc = torch.tensor([[sum(gamma**(k - t) * r[0, k].item() for k in range(t, T)) for t in range(T)]], dtype=F64)
    torch.testing.assert_close(mc, disc - v, rtol=0, atol=1e-14)


def test_gae_steps_over_interior_masked_tokens():
    # An interior masked span (e.g. tool output) is skipped: the row equals the row with it removed.
    gamma, lam = 0.9, 0.95
    r = torch.tensor([[0.1, 0.2, 99.0, 0.3]], dtype=F64)
    v = torch.tensor([[0.5, 0.4, 99.0, 0.2]], dtype=F64)
    mask = torch.tensor([[True, True, False, True]])
    kw = dict(rewards=torch.zeros(1, dtype=F64), gamma=gamma, lam=lam, whiten=False)
    adv, ret = compute_advantages("gae", loss_mask=mask, values=v, token_rewards=r, **kw)
    keep = [0, 1, 3]
    adv_c, ret_c = compute_advantages(
        "gae", loss_mask=torch.ones(1, 3, dtype=torch.bool), values=v[:, keep], token_rewards=r[:, keep], **kw
    )
    torch.testing.assert_close(adv[:, keep], adv_c, rtol=0, atol=1e-15)
    torch.testing.assert_close(ret[:, keep], ret_c, rtol=0, atol=1e-15)
    assert adv[0, 2] == 0 and ret[0, 2] == 0


def test_grpo_rloo_dr_grpo_sum_to_zero_within_each_group():
    torch.manual_seed(2)
    rewards = torch.randn(12, dtype=F64)
    groups = torch.tensor([4, 8, 4, 1, 8, 1, 4, 8, 1, 1, 4, 8])
    mask = torch.ones(12, 1, dtype=torch.bool)
    for name in ("grpo", "dr_grpo", "rloo"):
        adv, _ = compute_advantages(name, rewards=rewards, loss_mask=mask, group_ids=groups)
        for g in groups.unique():
            assert abs(adv[groups == g, 0].sum().item()) < 1e-12, name


def test_rloo_is_g_over_g_minus_1_times_dr_grpo():
    torch.manual_seed(3)
    groups = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2, 2])
    rewards = torch.randn(10, dtype=F64)
    mask = torch.ones(10, 2, dtype=torch.bool)
    rloo, _ = compute_advantages("rloo", rewards=rewards, loss_mask=mask, group_ids=groups)
    dr, _ = compute_advantages("dr_grpo", rewards=rewards, loss_mask=mask, group_ids=groups)
    size = torch.bincount(groups)[groups].to(F64)[:, None]
    torch.testing.assert_close(rloo, size / (size - 1) * dr, rtol=0, atol=1e-14)


def test_grpo_gives_zero_to_a_group_of_equal_rewards():
    # mean of three 0.1s is not exactly 0.1; eps keeps the rounding noise tiny
    adv, _ = compute_advantages(
        "grpo", rewards=torch.tensor([0.1, 0.1, 0.1]), loss_mask=torch.ones(3, 2, dtype=torch.bool),
        group_ids=torch.tensor([0, 0, 0]),
    )
    assert adv.abs().max().item() < 1e-6


def test_outcome_to_token_rewards():
    mask = torch.tensor([[True, True, False], [False, False, False], [True, True, True], [True, False, True]])
    out = outcome_to_token_rewards(torch.tensor([1.0, 2.0, 3.0, 4.0]), mask)
    expected = torch.tensor([[0, 1.0, 0], [0, 0, 0], [0, 0, 3.0], [0, 0, 4.0]])
    assert torch.equal(out, expected)


# ----------------------------------------------------------------------------------------------
# properties over every estimator


def random_batch(seed, T=6, interior_masked=False):
    rng = random.Random(seed)
    sizes = [rng.randint(2, 5) for _ in range(rng.randint(1, 5))]
    ids = rng.sample(range(1000), len(sizes))
    group_ids = [g for g, s in zip(ids, sizes) for _ in range(s)]
    rng.shuffle(group_ids)
    n = len(group_ids)
    lengths = [rng.choice([0, 1, T, rng.randint(1, T)]) if rng.random() < 0.2 else rng.randint(1, T) for _ in range(n)]
    g = torch.Generator().manual_seed(seed)
    greedy = {gid: rng.random() for gid in ids}
    return dict(
        rewards=torch.randn(n, generator=g, dtype=F64),
        loss_mask=mask_from_lengths(lengths, T),
        group_ids=torch.tensor(group_ids),
        values=torch.randn(n, T, generator=g, dtype=F64),
        token_rewards=torch.randn(n, T, generator=g, dtype=F64),
        baseline_rewards=torch.tensor([greedy[i] for i in group_ids], dtype=F64),
    )


def call(name, batch, **kw):
    batch = dict(batch)
    if name not in ("reinforce_pp", "reinforce_pp_baseline", "gae"):
        batch.pop("token_rewards")  # outcome estimators: test on the plain outcome rewards
    kw = {k: v for k, v in kw.items() if k in estimator_options(ADVANTAGE_ESTIMATORS[name])}  # those it takes
    return compute_advantages(name, **batch, **kw)


@pytest.mark.parametrize("name", sorted(ALL_NAMES))
def test_appending_masked_padding_changes_nothing(name):
    batch = random_batch(10)
    kw = dict(gamma=0.9, lam=0.95) if name in ("gae", "reinforce_pp") else {}
    adv, ret = call(name, batch, **kw)
    padded = dict(batch)
    n = batch["rewards"].shape[0]
    padded["loss_mask"] = torch.cat([batch["loss_mask"], torch.zeros(n, 3, dtype=torch.bool)], dim=1)
    garbage = torch.full((n, 3), float("nan"), dtype=F64)  # never read: padding may hold anything
    padded["values"] = torch.cat([batch["values"], garbage], dim=1)
    padded["token_rewards"] = torch.cat([batch["token_rewards"], garbage], dim=1)
    adv_p, ret_p = call(name, padded, **kw)
    torch.testing.assert_close(adv_p[:, :-3], adv, rtol=0, atol=1e-13)
    torch.testing.assert_close(ret_p[:, :-3], ret, rtol=0, atol=1e-13)
    assert torch.equal(adv_p[:, -3:], torch.zeros(n, 3, dtype=F64))
    assert torch.equal(ret_p[:, -3:], torch.zeros(n, 3, dtype=F64))


@pytest.mark.parametrize("name", sorted(ALL_NAMES))
def test_zero_outside_the_mask_and_no_autograd(name):
    batch = random_batch(11)
    batch["values"].requires_grad_(True)
    batch["token_rewards"].requires_grad_(True)
    adv, ret = call(name, batch)
    assert adv.shape == ret.shape == batch["loss_mask"].shape
    assert not adv.requires_grad and not ret.requires_grad
    assert torch.equal(adv[~batch["loss_mask"]], torch.zeros_like(adv[~batch["loss_mask"]]))
    assert torch.equal(ret[~batch["loss_mask"]], torch.zeros_like(ret[~batch["loss_mask"]]))


# Slow reference: plain Python over lists, one sample and one token at a time.


def ref_whiten(rows, lengths):
    flat = [x for row, L in zip(rows, lengths) for x in row[:L]]
    if not flat:
        return rows
    mean = sum(flat) / len(flat)
    var = sum((x - mean) ** 2 for x in flat) / (len(flat) - 1 if len(flat) > 1 else 1)
    return [[(x - mean) / math.sqrt(var + WHITEN_EPS) if t < L else 0.0 for t, x in enumerate(row)]
            for row, L in zip(rows, lengths)]


def ref_estimator(name, b, gamma, lam):
    r = b["rewards"].tolist()
    ids = b["group_ids"].tolist()
    lengths = b["loss_mask"].sum(1).tolist()
    T = b["loss_mask"].shape[1]
    members = {}
    for i, g in enumerate(ids):
        members.setdefault(g, []).append(i)
    token_r = b["token_rewards"].tolist()
    per_seq = None
    if name == "reinforce":
        per_seq = r
    elif name == "grpo":
        per_seq = [(r[i] - statistics.mean(r[j] for j in members[ids[i]]))
                   / (statistics.stdev([r[j] for j in members[ids[i]]]) + EPS) for i in range(len(r))]
    elif name == "dr_grpo":
        per_seq = [r[i] - statistics.mean(r[j] for j in members[ids[i]]) for i in range(len(r))]
    elif name == "rloo":
        per_seq = [r[i] - sum(r[j] for j in members[ids[i]] if j != i) / (len(members[ids[i]]) - 1)
                   for i in range(len(r))]
    elif name == "remax":
        per_seq = [r[i] - b["baseline_rewards"][i].item() for i in range(len(r))]
    if per_seq is not None:
        out = [[per_seq[i] if t < lengths[i] else 0.0 for t in range(T)] for i in range(len(r))]
        return out, out
    if name == "reinforce_pp":
        ret = []
        for i in range(len(r)):
            row = [0.0] * T
            running = 0.0
            for t in reversed(range(lengths[i])):
                running = token_r[i][t] + gamma * running
                row[t] = running
            ret.append(row)
        return ref_whiten(ret, lengths), ret
    if name == "reinforce_pp_baseline":
        ret = []
        for i in range(len(r)):
            mean = sum(r[j] for j in members[ids[i]]) / len(members[ids[i]])
            row = [0.0] * T
            for t in range(lengths[i]):
                row[t] = sum(token_r[i][t:lengths[i]]) - mean
            ret.append(row)
        return ref_whiten(ret, lengths), ret
    if name == "gae":
        v = b["values"].tolist()
        adv, ret = [], []
        for i in range(len(r)):
            a_row, r_row = [0.0] * T, [0.0] * T
            last = 0.0
            for t in reversed(range(lengths[i])):
                next_v = v[i][t + 1] if t + 1 < lengths[i] else 0.0
                delta = token_r[i][t] + gamma * next_v - v[i][t]
                last = delta + gamma * lam * last
                a_row[t], r_row[t] = last, last + v[i][t]
            adv.append(a_row)
            ret.append(r_row)
        return ref_whiten(adv, lengths), ret
    raise AssertionError(name)


def ref_outcome_with_token_rewards(name, b):
    """Outcome estimators with per-token rewards: baseline/scale from the summed returns, each token
    credited with its reward-to-go (plain Python)."""
    ids = b["group_ids"].tolist()
    lengths = b["loss_mask"].sum(1).tolist()
    T = b["loss_mask"].shape[1]
    tr = b["token_rewards"].tolist()
    ret = [sum(tr[i][: lengths[i]]) for i in range(len(ids))]
    members = {}
    for i, g in enumerate(ids):
        members.setdefault(g, []).append(i)
    out = []
    for i in range(len(ids)):
        group = [ret[j] for j in members[ids[i]]]
        base, scale = 0.0, 1.0
        if name in ("grpo", "dr_grpo"):
            base = statistics.mean(group)
        if name == "grpo":
            scale = statistics.stdev(group) + EPS
        if name == "rloo":
            base = (sum(group) - ret[i]) / (len(group) - 1)
        if name == "remax":
            base = b["baseline_rewards"][i].item()
        out.append([(sum(tr[i][t: lengths[i]]) - base) / scale if t < lengths[i] else 0.0 for t in range(T)])
    return out


@pytest.mark.parametrize("name", ["reinforce", "grpo", "dr_grpo", "rloo", "remax"])
def test_outcome_estimators_with_token_rewards_match_slow_reference(name):
    for seed in range(6):
        batch = random_batch(200 + seed)
        adv, ret = compute_advantages(name, **batch)
        ref = torch.tensor(ref_outcome_with_token_rewards(name, batch), dtype=F64)
        torch.testing.assert_close(adv, ref, rtol=0, atol=1e-12)
        assert torch.equal(ret, adv)


def test_grpo_kl_penalty_of_a_solved_group_stays_of_the_order_of_beta_kl():
    """KL in the reward with GRPO: 8 correct responses of 32 tokens, beta = 0.01. The outcome rewards are
    normalised by group and the penalty added unscaled as a reward-to-go, so every advantage is exactly
    -beta * (the KL still ahead). Guards the normalisation of the KL-penalised returns, which divided the
    penalty by the std it alone made (max |A| 7.7 on this batch, against at most beta * sum KL here)."""
    g = torch.Generator().manual_seed(0)
    n, t, beta = 8, 32, 0.01
    mask = torch.ones(n, t, dtype=torch.bool)
    kl = torch.rand(n, t, generator=g, dtype=F64) * 0.2 - 0.05  # k1 terms, some negative
    rewards = torch.ones(n, dtype=F64)
    adv, _ = compute_advantages("grpo", rewards=rewards, loss_mask=mask, group_ids=torch.zeros(n, dtype=torch.long),
                                token_rewards=outcome_to_token_rewards(rewards, mask), penalties=-beta * kl)
    to_go = kl.flip(1).cumsum(1).flip(1)
    torch.testing.assert_close(adv, -beta * to_go, rtol=0, atol=1e-15)
    assert adv.abs().max() <= beta * kl.abs().sum(1).max()
    # the folded form (the penalised returns normalised by their own std) is what it must not be
    folded, _ = compute_advantages("grpo", rewards=rewards, loss_mask=mask, group_ids=torch.zeros(n, dtype=torch.long),
                                   token_rewards=outcome_to_token_rewards(rewards, mask) - beta * kl)
    assert folded.abs().max() > 1.0


def test_grpo_penalties_are_added_after_the_group_normalisation():
    """A mixed group: (r - mean) / (std + eps) from the outcomes alone, plus the penalty's reward-to-go."""
    mask = mask_from_lengths([2, 1], 2)
    rewards = torch.tensor([1.0, 0.0], dtype=F64)  # mean 0.5, Bessel std sqrt(0.5)
    penalties = torch.tensor([[-0.1, -0.2], [-0.3, 9.0]], dtype=F64)  # 9.0 is masked
    adv, _ = compute_advantages("grpo", rewards=rewards, loss_mask=mask, group_ids=torch.tensor([0, 0]),
                                token_rewards=outcome_to_token_rewards(rewards, mask), penalties=penalties)
    a = 0.5 / (0.5**0.5 + 1e-6)
    want = torch.tensor([[a - 0.3, a - 0.2], [-a - 0.3, 0.0]], dtype=F64)
    torch.testing.assert_close(adv, want, rtol=0, atol=1e-15)


@pytest.mark.parametrize("name", sorted(set(ALL_NAMES) - {"grpo"}))
def test_penalties_are_folded_into_the_rewards_for_every_other_estimator(name):
    """penalties = token_rewards + penalties for every estimator but grpo, bit for bit (the trainer's KL in the
    reward gives the same advantages as when it was folded into the per-token rewards)."""
    batch = random_batch(7)
    g = torch.Generator().manual_seed(1)
    penalties = torch.randn(batch["loss_mask"].shape, generator=g, dtype=F64) * 0.1
    kw = dict(gamma=0.9, lam=0.95) if name in ("gae", "reinforce_pp") else {}
    kw = {k: v for k, v in kw.items() if k in estimator_options(ADVANTAGE_ESTIMATORS[name])}
    split = compute_advantages(name, **batch, penalties=penalties, **kw)
    folded = compute_advantages(name, **{**batch, "token_rewards": batch["token_rewards"] + penalties}, **kw)
    assert torch.equal(split[0], folded[0]) and torch.equal(split[1], folded[1])


@pytest.mark.parametrize("name", sorted(ALL_NAMES))
def test_vectorised_matches_slow_reference(name):
    for seed in range(8):
        batch = random_batch(100 + seed)
        gamma, lam = (1.0, 1.0) if name == "reinforce_pp_baseline" else (0.93, 0.81)
        adv, ret = call(name, batch, gamma=gamma, lam=lam)
        ref_adv, ref_ret = ref_estimator(name, batch, gamma, lam)
        torch.testing.assert_close(adv, torch.tensor(ref_adv, dtype=F64), rtol=0, atol=1e-12)
        torch.testing.assert_close(ret, torch.tensor(ref_ret, dtype=F64), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# errors


def test_unknown_estimator_lists_the_known_names():
    with pytest.raises(KeyError, match=r"unknown advantage estimator 'grpoo'; known: .*did you mean 'grpo'"):
        outcome("grpoo")


def test_shape_errors_name_the_shapes():
    mask = torch.ones(4, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"rewards must have shape \[N\] = \[4\] to match loss_mask \[4, 3\]; got \[4, 1\]"):
        compute_advantages("reinforce", rewards=torch.zeros(4, 1), loss_mask=mask)
    with pytest.raises(ValueError, match=r"group_ids must have shape \[N\] = \[4\] to match loss_mask \[4, 3\]; got \[3\]"):
        compute_advantages("grpo", rewards=torch.zeros(4), loss_mask=mask, group_ids=torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match=r"values \[4, 2\], loss_mask \[4, 3\]"):
        compute_advantages("gae", rewards=torch.zeros(4), loss_mask=mask, values=torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"token_rewards \[3, 3\], loss_mask \[4, 3\]"):
        compute_advantages("reinforce_pp", rewards=torch.zeros(4), loss_mask=mask, token_rewards=torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"baseline_rewards must have shape \[N\] = \[4\]"):
        compute_advantages("remax", rewards=torch.zeros(4), loss_mask=mask, baseline_rewards=torch.zeros(2))
    with pytest.raises(ValueError, match=r"loss_mask must be a \[N, T\] tensor; got \[4\]"):
        compute_advantages("reinforce", rewards=torch.zeros(4), loss_mask=torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"group_ids must be an integer tensor \[N\]; got dtype torch.float32"):
        compute_advantages("grpo", rewards=torch.zeros(4), loss_mask=mask, group_ids=torch.zeros(4))


def test_non_finite_inputs_are_reported_with_their_indices():
    mask = torch.tensor([[True, True], [True, False]])
    with pytest.raises(ValueError, match=r"^rewards contain 2 non-finite values \(nan/inf\) at indices \[0, 1\]; "
                                         r"check the reward function$"):
        compute_advantages("reinforce", rewards=torch.tensor([float("nan"), float("inf")]), loss_mask=mask)
    bad = torch.tensor([[0.0, float("-inf")], [0.0, float("nan")]])  # the nan is masked out: ignored
    with pytest.raises(ValueError, match=r"^token_rewards contain 1 non-finite values \(nan/inf\) at indices "
                                         r"\[\(0, 1\)\]; check the reward function$"):
        compute_advantages("reinforce_pp", rewards=torch.zeros(2), loss_mask=mask, token_rewards=bad)
    with pytest.raises(ValueError, match=r"^values contain 1 non-finite .*\[\(0, 1\)\]; check the value model \(critic\)$"):
        compute_advantages("gae", rewards=torch.zeros(2), loss_mask=mask, values=bad)
    with pytest.raises(ValueError, match=r"^baseline_rewards contain 1 non-finite values \(nan/inf\) at indices \[1\]"):
        compute_advantages("remax", rewards=torch.zeros(2), loss_mask=mask, baseline_rewards=torch.tensor([0.0, float("nan")]))


def test_missing_inputs_are_named():
    mask = torch.ones(2, 2, dtype=torch.bool)
    for name in ("grpo", "dr_grpo", "rloo", "reinforce_pp_baseline"):
        with pytest.raises(ValueError, match=f"advantage estimator '{name}' needs group_ids; got None"):
            compute_advantages(name, rewards=torch.zeros(2), loss_mask=mask)
    with pytest.raises(ValueError, match="advantage estimator 'remax' needs baseline_rewards; got None"):
        compute_advantages("remax", rewards=torch.zeros(2), loss_mask=mask)
    with pytest.raises(ValueError, match="advantage estimator 'gae' needs values; got None"):
        compute_advantages("gae", rewards=torch.zeros(2), loss_mask=mask)


def test_groups_of_one_are_rejected_by_grpo_and_rloo():
    mask = torch.ones(3, 2, dtype=torch.bool)
    for name in ("grpo", "rloo"):
        with pytest.raises(ValueError, match=f"^{name} needs at least 2 samples per group; group 7 has 1$"):
            compute_advantages(name, rewards=torch.zeros(3), loss_mask=mask, group_ids=torch.tensor([2, 7, 2]))
    with pytest.raises(ValueError, match=r"group 4 has 1 \(and 1 more such groups\)"):
        compute_advantages("rloo", rewards=torch.zeros(4), loss_mask=torch.ones(4, 2, dtype=torch.bool),
                           group_ids=torch.tensor([8, 6, 4, 6]))


def test_bad_numbers_are_rejected():
    mask = torch.ones(2, 2, dtype=torch.bool)
    kw = dict(rewards=torch.zeros(2), loss_mask=mask, values=torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"gamma must be >= 0 and <= 1; got 1.5"):
        compute_advantages("gae", gamma=1.5, **kw)
    with pytest.raises(ValueError, match=r"lam must be >= 0 and <= 1; got -0.1"):
        compute_advantages("gae", lam=-0.1, **kw)
    with pytest.raises(ValueError, match=r"eps must be > 0; got 0.0"):
        compute_advantages("grpo", rewards=torch.zeros(2), loss_mask=mask, group_ids=torch.tensor([0, 0]), eps=0.0)


def test_each_estimator_declares_its_own_options_and_rejects_others():
    declared = {name: estimator_options(fn) for name, fn in ADVANTAGE_ESTIMATORS.items()}
    assert declared == {
        "reinforce": {}, "grpo": {"eps": 1e-6}, "dr_grpo": {}, "rloo": {}, "remax": {},
        "reinforce_pp": {"gamma": 1.0, "whiten": True}, "reinforce_pp_baseline": {"whiten": True},
        "gae": {"gamma": 1.0, "lam": 1.0, "whiten": True},
    }
    mask = torch.ones(2, 2, dtype=torch.bool)
    # reinforce_pp_baseline has no discount (OpenRLHF forces gamma = 1): a gamma is an error, not ignored
    with pytest.raises(TypeError, match=r"'reinforce_pp_baseline' does not take gamma; it takes: whiten"):
        compute_advantages("reinforce_pp_baseline", rewards=torch.zeros(2), loss_mask=mask,
                           group_ids=torch.tensor([0, 0]), gamma=0.9)
    with pytest.raises(TypeError, match=r"'rloo' does not take lam; it takes: no options"):
        compute_advantages("rloo", rewards=torch.zeros(2), loss_mask=mask, group_ids=torch.tensor([0, 0]), lam=0.9)


def test_reinforce_pp_steps_over_interior_masked_tokens():
    # gamma 0.5 counts valid tokens only: (1, [masked 50], 2) -> G = (1 + 0.5*2, 2) = (2, 2)
    mask = torch.tensor([[True, False, True]])
    _, ret = compute_advantages(
        "reinforce_pp", rewards=torch.zeros(1, dtype=F64), loss_mask=mask,
        token_rewards=torch.tensor([[1.0, 50.0, 2.0]], dtype=F64), gamma=0.5, whiten=False,
    )
    assert torch.equal(ret, torch.tensor([[2.0, 0.0, 2.0]], dtype=F64))


def test_grpo_with_token_rewards_gives_a_group_of_equal_returns_zero_advantage():
    """The docstring's invariant also with per-token rewards: returns all equal -> A = 0. Before, the
    reward-to-go minus the group mean was divided by std + eps = 1e-6 (an episode that always fails, every
    step rewarded -1, got advantages of ~1e6; found by the CartPole / Acrobot baseline study)."""
    mask = torch.ones(4, 3, dtype=torch.bool)
    token_rewards = torch.tensor([[-1.0, -1.0, -1.0]] * 2 + [[-1.0, -1.0, 0.0], [-1.0, -1.0, -1.0]])
    rewards = token_rewards.sum(-1)
    adv, _ = compute_advantages("grpo", rewards=rewards, loss_mask=mask, group_ids=torch.tensor([0, 0, 1, 1]),
                                token_rewards=token_rewards)
    assert torch.equal(adv[:2], torch.zeros(2, 3))  # group 0: both returns -3
    # group 1 (returns -2 and -3: mean -2.5, std 0.7071): the reward-to-go minus the mean, over the std
    to_go = torch.tensor([[-2.0, -1.0, 0.0], [-3.0, -2.0, -1.0]])
    torch.testing.assert_close(adv[2:], (to_go + 2.5) / (0.5**0.5 + 1e-6))
