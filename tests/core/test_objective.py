"""rl_objective: the per-micro-batch loss as a pure function."""

from __future__ import annotations

import pytest
import torch

from rlvr.core.advantages import compute_advantages, outcome_to_token_rewards
from rlvr.core.aggregation import aggregate
from rlvr.core.kl import kl_divergence
from rlvr.core.losses import policy_loss
from rlvr.core.objective import rl_objective

F64 = torch.float64


def batch(seed=0, n=4, t=5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, t, 7, generator=g, dtype=F64)
    targets = torch.randint(0, 7, (n, t), generator=g)
    lengths = torch.tensor([5, 3, 1, 4])[:n]
    mask = torch.arange(t)[None, :] < lengths[:, None]
    return dict(
        logits=logits, targets=targets, mask=mask,
        old=torch.randn(n, t, generator=g, dtype=F64) * 0.1 - 1.5,
        ref=torch.randn(n, t, generator=g, dtype=F64) * 0.3 - 1.5,
        adv=torch.randn(n, t, generator=g, dtype=F64),
        w=torch.rand(n, t, generator=g, dtype=F64) * 2,
    )


def logprobs_of(logits, targets):
    return torch.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1)


def entropy_of(logits):
    p = torch.softmax(logits, -1)
    return -(p * torch.log_softmax(logits, -1)).sum(-1)


def grad_of(b, **kw):
    logits = b["logits"].clone().requires_grad_(True)
    lp = logprobs_of(logits, b["targets"])
    loss, metrics = rl_objective(lp, loss_mask=b["mask"], advantages=b["adv"], old_logprobs=b["old"], **kw)
    loss.backward()
    return loss.detach(), logits.grad, metrics


def test_matches_the_hand_composition_of_its_terms():
    b = batch()
    kw = dict(loss="ppo_clip", aggregation="seq_mean_token_mean", is_weights=b["w"], ref_logprobs=b["ref"],
              kl_coef=0.3, kl_estimator="k3", entropy_coef=0.05)
    logits = b["logits"].clone().requires_grad_(True)
    lp = logprobs_of(logits, b["targets"])
    ent = entropy_of(logits)
    loss, _ = rl_objective(lp, loss_mask=b["mask"], advantages=b["adv"], old_logprobs=b["old"], entropy=ent, **kw)
    pg, _ = policy_loss("ppo_clip", logprobs=lp, old_logprobs=b["old"], advantages=b["adv"], loss_mask=b["mask"])
    kl = kl_divergence(lp, b["ref"], "k3", loss_mask=b["mask"])
    per_token = pg * b["w"] + 0.3 * kl - 0.05 * ent
    expected = aggregate(per_token, b["mask"], "seq_mean_token_mean")
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-14)


def test_importance_weights_multiply_the_policy_gradient_term_only():
    b = batch(1)
    ent_kw = dict(ref_logprobs=b["ref"], kl_coef=0.5, kl_estimator="k3")
    # With A = 0 the policy-gradient term vanishes: the loss and gradient (KL only) must not depend on w.
    b0 = {**b, "adv": torch.zeros_like(b["adv"])}
    _, g_w, _ = grad_of(b0, is_weights=b["w"], **ent_kw)
    _, g_1, _ = grad_of(b0, is_weights=None, **ent_kw)
    torch.testing.assert_close(g_w, g_1, rtol=0, atol=1e-15)
    assert g_1.abs().sum() > 0
    # With the KL off, w scales exactly the PG term: the loss is linear in w.
    l_w, _, _ = grad_of(b, is_weights=b["w"], aggregation="token_mean")
    l_2w, _, _ = grad_of(b, is_weights=2 * b["w"], aggregation="token_mean")
    torch.testing.assert_close(l_2w, 2 * l_w, rtol=1e-14, atol=0)


def test_kl_in_the_loss_carries_gradient_kl_in_the_reward_does_not():
    b = batch(2)
    zero_adv = {**b, "adv": torch.zeros_like(b["adv"])}
    # in the loss: with A = 0 the whole gradient is the KL term's, and it is non-zero
    _, g_loss, m = grad_of(zero_adv, ref_logprobs=b["ref"], kl_coef=0.2, kl_estimator="k3")
    assert g_loss.abs().sum() > 1e-6 and float(m["kl_loss"]) > 0
    # in the reward: the penalty enters the advantages, which carry no gradient, so the gradient is the
    # plain policy gradient with those advantages
    logits = b["logits"].clone().requires_grad_(True)
    lp = logprobs_of(logits, b["targets"])
    kl = kl_divergence(lp, b["ref"], "k1", loss_mask=b["mask"])
    token_rewards = outcome_to_token_rewards(torch.ones(4, dtype=F64), b["mask"]) - 0.2 * kl
    adv, _ = compute_advantages("reinforce", rewards=torch.ones(4, dtype=F64), loss_mask=b["mask"], token_rewards=token_rewards)
    assert not adv.requires_grad
    loss, _ = rl_objective(lp, loss_mask=b["mask"], advantages=adv, loss="pg", aggregation="token_mean")
    loss.backward()
    lp2 = logprobs_of(b["logits"].clone().requires_grad_(True), b["targets"])
    expected = torch.autograd.grad(aggregate(-adv * lp2, b["mask"], "token_mean"), lp2)[0]
    got = torch.autograd.grad(
        rl_objective(lp2, loss_mask=b["mask"], advantages=adv, loss="pg", aggregation="token_mean")[0], lp2
    )[0]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-15)
    # swapping the placement changes the gradient
    _, g_reward, _ = grad_of({**b, "adv": adv}, loss="pg", aggregation="token_mean")
    _, g_in_loss, _ = grad_of({**b, "adv": torch.ones_like(adv) * b["mask"]}, loss="pg", aggregation="token_mean",
                              ref_logprobs=b["ref"], kl_coef=0.2, kl_estimator="k2")
    assert not torch.allclose(g_reward, g_in_loss)


def test_k1_in_the_loss_is_refused_with_the_alternatives():
    b = batch(3)
    with pytest.raises(ValueError, match="zero expected gradient.*k3.*k2.*reward"):
        grad_of(b, ref_logprobs=b["ref"], kl_coef=0.1, kl_estimator="k1")


def test_entropy_bonus_raises_entropy():
    b = batch(4)
    logits = b["logits"].clone().requires_grad_(True)
    before = float(entropy_of(logits.detach())[b["mask"]].mean())
    opt = torch.optim.SGD([logits], lr=0.5)
    for _ in range(5):
        opt.zero_grad()
        lp = logprobs_of(logits, b["targets"])
        loss, _ = rl_objective(lp, loss_mask=b["mask"], advantages=torch.zeros_like(b["adv"]), loss="pg",
                               entropy=entropy_of(logits), entropy_coef=1.0)
        loss.backward()
        opt.step()
    after = float(entropy_of(logits.detach())[b["mask"]].mean())
    assert after > before + 1e-3, (before, after)


def test_value_loss_uses_its_own_aggregation_and_leaves_the_policy_gradient_alone():
    b = batch(5)
    g = torch.Generator().manual_seed(9)
    values = torch.randn(4, 5, generator=g, dtype=F64, requires_grad=True)
    old_values = torch.randn(4, 5, generator=g, dtype=F64)
    returns = torch.randn(4, 5, generator=g, dtype=F64)
    logits = b["logits"].clone().requires_grad_(True)
    lp = logprobs_of(logits, b["targets"])
    loss, m = rl_objective(lp, loss_mask=b["mask"], advantages=b["adv"], old_logprobs=b["old"],
                           aggregation="seq_mean_token_mean", values=values, old_values=old_values, returns=returns,
                           value_clip=0.2)
    from rlvr.core.losses import value_loss

    vl, _ = value_loss(values, old_values, returns, b["mask"], clip_range=0.2)
    torch.testing.assert_close(m["value_loss"], aggregate(vl, b["mask"], "token_mean").detach(), rtol=0, atol=1e-14)
    loss.backward()
    _, g_policy_only, _ = grad_of(b, aggregation="seq_mean_token_mean")
    torch.testing.assert_close(logits.grad, g_policy_only, rtol=0, atol=1e-15)
    assert values.grad.abs().sum() > 0


def test_all_false_mask_gives_zero_loss_and_zero_gradient():
    b = batch(6)
    nothing = {**b, "mask": torch.zeros_like(b["mask"])}
    for aggregation in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm"):
        loss, grad, _ = grad_of(nothing, aggregation=aggregation, is_weights=b["w"], ref_logprobs=b["ref"],
                                kl_coef=0.1, kl_estimator="k3")
        assert float(loss) == 0.0
        assert torch.equal(grad, torch.zeros_like(grad))


def test_on_policy_default_uses_detached_logprobs_as_old():
    b = batch(7)
    logits = b["logits"].clone().requires_grad_(True)
    lp = logprobs_of(logits, b["targets"])
    _, m = rl_objective(lp, loss_mask=b["mask"], advantages=b["adv"], loss="ppo_clip")
    assert float(m["ratio_mean"]) == 1.0 and float(m["clip_frac_high"]) == 0.0
