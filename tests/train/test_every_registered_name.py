"""Every registered advantage estimator and policy loss runs one step of the trainer, and the trainer asks the
registry what each needs (rlvr.core.registry `needs`), never its name."""

from __future__ import annotations

import math

import pytest

from rlvr.core.advantages import ADVANTAGE_ESTIMATORS
from rlvr.core.losses import POLICY_LOSSES
from rlvr.train.build import build
from rlvr.train.data import PromptStream
from tests.tiny_run import tiny_config


def one_step(tiny_dir, run_dir, *overrides) -> dict:
    trainer = build(tiny_config(tiny_dir, run_dir, "train.steps=1", *overrides))
    return trainer.step(PromptStream(trainer.models.task.examples("train"), 0), 1)


@pytest.mark.parametrize("name", list(ADVANTAGE_ESTIMATORS))
def test_every_advantage_estimator_runs_a_step(tiny_dir, tmp_path, name):
    critic = ["algorithm.critic.enabled=true"] if "values" in ADVANTAGE_ESTIMATORS.needs(name) else []
    m = one_step(tiny_dir, tmp_path, f"algorithm.advantage={name}", *critic)
    assert m["policy_version"] == 1.0 and math.isfinite(m["loss"])
    assert ("value_loss" in m) == bool(critic)


@pytest.mark.parametrize("name", list(POLICY_LOSSES))
def test_every_policy_loss_runs_a_step(tiny_dir, tmp_path, name):
    m = one_step(tiny_dir, tmp_path, f"algorithm.loss={name}")
    assert m["policy_version"] == 1.0 and math.isfinite(m["loss"])

