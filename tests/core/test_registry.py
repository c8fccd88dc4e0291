"""Registries keep what each entry declares it needs; the trainer and the checks ask them, not names."""

from __future__ import annotations

import pytest

from rlvr.core.advantages import ADVANTAGE_ESTIMATORS
from rlvr.core.losses import COVARIANCE_LOSSES, POLICY_LOSSES
from rlvr.core.registry import Registry


def test_needs_are_kept_at_registration():
    reg = Registry("thing")

    @reg.register("a", needs=("x",))
    def a(): ...

    @reg.register("b")
    def b(): ...

    assert reg.needs("a") == ("x",) and reg.needs("b") == ()
    assert reg.having("x") == ("a",)
    with pytest.raises(KeyError, match="unknown thing 'c'"):
        reg.needs("c")


def test_the_estimators_and_losses_declare_what_the_trainer_must_provide():
    assert ADVANTAGE_ESTIMATORS.having("values") == ("gae",)
    assert ADVANTAGE_ESTIMATORS.having("baseline_rewards") == ("remax",)
    assert set(ADVANTAGE_ESTIMATORS.having("group_ids")) == {"grpo", "dr_grpo", "rloo", "reinforce_pp_baseline"}
    assert POLICY_LOSSES.having("covariance_selection") == COVARIANCE_LOSSES == ("clip_cov", "kl_cov")


def test_a_loss_brings_its_own_config_checks():
    assert POLICY_LOSSES.problems("pg", off_policy=True)[0].startswith("the pg loss has no importance ratio")
    assert POLICY_LOSSES.problems("pg", off_policy=False) == []
    assert "sequence-level" in POLICY_LOSSES.problems("gspo", aggregation="token_mean")[0]
    assert POLICY_LOSSES.problems("clip_cov", options={"clip_cov_lb": 5.0, "clip_cov_ub": 5.0}) == [
        "algorithm.loss.clip_cov_lb (5.0) must be below clip_cov_ub (5.0)"]
    assert POLICY_LOSSES.problems("ppo_clip", off_policy=True, aggregation="token_mean") == []  # no check
