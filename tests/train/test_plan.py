"""The step plan (rlvr.train.plan.plan_step): which passes one RL step runs, from the recipe and three facts."""

from __future__ import annotations

import dataclasses

import pytest

from rlvr.config import resolve
from rlvr.train.plan import StepPlan, plan_step


def plan(*overrides, step=1, stale=False, reference=False, replays=False, defer=True) -> StepPlan:
    cfg = resolve({}, ["model.name=tiny", *overrides])
    return plan_step(cfg, step, stale=stale, reference=reference, replays_routes=replays, defer_is_weights=defer)


def test_an_exactly_on_policy_step_runs_no_pass_before_the_update():
    p = plan("algorithm.preset=grpo")
    assert p == StepPlan(old_logprobs=False, deferred_is=False, is_weights=False, reference=False, kl_in_reward=False,
                         values=False, baseline_rollout=False, covariance_selection=False, layer=None)


@pytest.mark.parametrize("overrides, facts", [
    (["train.epochs=2"], {}),
    (["train.mini_batches=2"], {}),
    ([], {"stale": True}),  # samples of other weights than the trainer's
    (["algorithm.kl.coef=0.1", "algorithm.kl.placement=reward"], {"reference": True}),
    (["algorithm.differential_smoothing.gamma_p=0.1"], {}),
    (["algorithm.layer_policy.layer=1", "algorithm.layer_policy.steps=2"], {}),
])
def test_the_old_policy_has_its_own_pass_when_the_first_forward_cannot_stand_in(overrides, facts):
    assert plan("algorithm.preset=grpo", *overrides, **facts).old_logprobs
    assert not plan("algorithm.preset=grpo").old_logprobs


def test_an_on_policy_is_correction_takes_its_weights_from_each_micro_batch():
    p = plan("algorithm.is_correction.enabled=true")
    assert p.deferred_is and not p.old_logprobs and not p.is_weights
    # the tests' switch, routing replay (the update replays the old forward's routes) and any off-policy
    # setting give the weights a pass of their own
    for q in (plan("algorithm.is_correction.enabled=true", defer=False),
              plan("algorithm.is_correction.enabled=true", replays=True),
              plan("algorithm.is_correction.enabled=true", "train.epochs=2")):
        assert q.old_logprobs and q.is_weights and not q.deferred_is


def test_kl_in_the_loss_needs_the_reference_but_not_the_old_pass():
    p = plan("algorithm.kl.coef=0.1", "algorithm.kl.placement=loss", reference=True)
    assert p.reference and not p.kl_in_reward and not p.old_logprobs
    assert plan("algorithm.kl.coef=0.1", "algorithm.kl.placement=reward", reference=True).kl_in_reward
    # no reference model loaded (or its coefficient at 0 now): no KL anywhere
    assert not plan("algorithm.kl.coef=0.1", "algorithm.kl.placement=reward").reference


def test_the_layer_policy_phase_lasts_its_steps_and_has_no_is_weights():
    lp = ["algorithm.layer_policy.layer=1", "algorithm.layer_policy.steps=2", "algorithm.is_correction.enabled=true"]
    assert [plan(*lp, step=s).layer for s in (1, 2, 3)] == [1, 1, None]
    assert not plan(*lp, step=1).is_weights and plan(*lp, step=3).deferred_is


@pytest.mark.parametrize("preset, field", [("remax", "baseline_rollout"), ("ppo", "values")])
def test_the_estimators_declared_needs_decide_the_extra_passes(preset, field):
    assert getattr(plan(f"algorithm.preset={preset}"), field)
    assert not getattr(plan("algorithm.preset=grpo"), field)


@pytest.mark.parametrize("loss", ["clip_cov", "kl_cov"])
def test_a_covariance_loss_selects_its_tokens(loss):
    assert plan(f"algorithm.loss={loss}").covariance_selection


def test_the_plan_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan().old_logprobs = True
