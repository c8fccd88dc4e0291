"""The engine contract (docs/design.md, "The engine contract"): versioned weight pushes, checked after each."""

from __future__ import annotations

import copy

import pytest

from rlvr.rollout import HFEngine
from rlvr.train.build import build
from rlvr.train.data import PromptStream
from tests.tiny_run import tiny_config


def _trainer_on_a_copy(tiny_dir, tmp_path, *overrides):
    """A trainer whose engine samples from its own copy of the weights (as vLLM or a bf16 copy would)."""
    trainer = build(tiny_config(tiny_dir, tmp_path, *overrides))
    trainer.models.engine = HFEngine(copy.deepcopy(trainer.models.policy), trainer.models.tokenizer)
    trainer.push_weights()
    return trainer


def test_versions_advance_and_batches_carry_theirs(tiny_dir, tmp_path):
    trainer = _trainer_on_a_copy(tiny_dir, tmp_path, "algorithm.preset=gspo")  # 4 optimizer steps per batch
    stream = PromptStream(trainer.models.task.examples("train"), 0)
    m1 = trainer.step(stream, 1)
    assert m1["sampled_policy_version"] == 0.0 and m1["policy_version"] == 4.0
    assert trainer.models.engine.policy_version == 4 and trainer.models.engine.model is not trainer.models.policy
    m2 = trainer.step(stream, 2)
    assert m2["sampled_policy_version"] == 4.0 and m2["policy_version"] == 8.0
    assert m2["weight_sync_max_diff"] < 1e-5


def test_a_skipped_push_fails_loudly(tiny_dir, tmp_path):
    """Training on stale weights is the failure users report most: a push that does nothing is caught."""
    trainer = _trainer_on_a_copy(tiny_dir, tmp_path, "optim.lr=1e-2")
    trainer.models.engine.update_weights = lambda model, version=None: None  # the push is skipped
    stream = PromptStream(trainer.models.task.examples("train"), 0)
    with pytest.raises(RuntimeError, match=r"weight sync failed at policy version 1: .* differs? .* by up to"):
        trainer.step(stream, 1)


def test_stale_batch_gets_its_old_logprobs_recomputed(tiny_dir, tmp_path, monkeypatch):
    """The old-log-prob pass is skipped only when the batch's version is the trainer's."""
    trainer = build(tiny_config(tiny_dir, tmp_path))
    calls = []
    original = trainer.forwards.logprobs
    monkeypatch.setattr(trainer.forwards, "logprobs", lambda *a, **k: calls.append(1) or original(*a, **k))
    stream = PromptStream(trainer.models.task.examples("train"), 0)
    trainer.step(stream, 1)  # on-policy grpo: no old-log-prob pass
    assert calls == []
    trainer.policy_version += 1  # as if the samples of the next step were drawn before an update
    trainer.step(stream, 2)
    assert calls  # recomputed
