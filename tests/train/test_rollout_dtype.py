"""Lower-precision rollouts (rollout.dtype): the engine's own bfloat16 copy, refreshed and checked exactly
after every update, with the IS correction on by default."""

from __future__ import annotations

import pytest
import torch

from rlvr.train import runner
from rlvr.train.data import PromptStream
from rlvr.train.runner import build, resolve_rollout_dtype
from tests.train.conftest import tiny_config


def test_a_bfloat16_rollout_copy_is_synced_exactly_and_corrected(tiny_dir, tmp_path):
    logged: list[str] = []
    trainer = build(tiny_config(tiny_dir, tmp_path / "run", "rollout.dtype=bfloat16", "train.steps=3"),
                    log=logged.append)
    assert trainer.engine.model is not trainer.model and trainer.engine.model.dtype == torch.bfloat16
    assert next(trainer.model.parameters()).dtype == torch.float32
    assert trainer.cfg.algorithm.is_correction.enabled and any("rollout dtype: bfloat16" in line for line in logged)
    stream = PromptStream(trainer.task.examples("train"), 0)
    for step in (1, 2, 3):
        m = trainer.run(stream, step)
        assert trainer.engine.weight_sync_error(trainer.model) == 0.0  # the copy is the cast of the trainer's
        assert 0 < m["logprob_mismatch"] < m["logprob_mismatch_max"] < 0.5  # bfloat16 sampling is visible
        assert "is_weight_mean" in m
    # negative control: a push that does not reach the copy
    trainer.engine.update_weights = lambda model, version=None: None
    with torch.no_grad():
        next(trainer.model.parameters()).add_(1e-2)
    with pytest.raises(RuntimeError, match="engine's copy of the weights differs"):
        trainer.push_weights()


def test_an_explicit_is_correction_setting_is_kept(tiny_dir, tmp_path):
    trainer = build(tiny_config(tiny_dir, tmp_path / "run", "rollout.dtype=bfloat16",
                                "algorithm.is_correction.enabled=false"))
    assert not trainer.cfg.algorithm.is_correction.enabled


def test_auto_picks_bfloat16_only_where_it_is_native(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(runner, "native_bf16", lambda device: True)
    assert resolve_rollout_dtype("auto", torch.float32, cpu) == torch.bfloat16
    monkeypatch.setattr(runner, "native_bf16", lambda device: False)
    assert resolve_rollout_dtype("auto", torch.float32, cpu) == torch.float32  # AVX2-only: costs nothing
    assert resolve_rollout_dtype(None, torch.float32, cpu) == torch.float32
    assert resolve_rollout_dtype("bfloat16", torch.float32, cpu) == torch.bfloat16


def test_a_shared_model_has_nothing_to_compare(tiny_dir, tmp_path):
    trainer = build(tiny_config(tiny_dir, tmp_path / "run"))
    assert trainer.engine.model is trainer.model and trainer.engine.weight_sync_error(trainer.model) is None
