"""Lower-precision rollouts (rollout.dtype): the engine's own bfloat16 copy, refreshed and checked exactly
after every update, with the IS correction on by default."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlvr.train import precision
from rlvr.train.build import build
from rlvr.train.data import PromptStream
from rlvr.train.precision import resolve_rollout_dtype
from tests.tiny_run import tiny_config


def test_a_bfloat16_rollout_copy_is_synced_exactly_and_corrected(tiny_dir, tmp_path):
    logged: list[str] = []
    trainer = build(tiny_config(tiny_dir, tmp_path / "run", "rollout.dtype=bfloat16", "train.steps=3"),
                    log=logged.append)
    assert trainer.models.engine.model is not trainer.models.policy and trainer.models.engine.model.dtype == torch.bfloat16
    assert next(trainer.models.policy.parameters()).dtype == torch.float32
    assert trainer.cfg.algorithm.is_correction.enabled and any("rollout dtype: bfloat16" in line for line in logged)
    stream = PromptStream(trainer.models.task.examples("train"), 0)
    for step in (1, 2, 3):
        m = trainer.step(stream, step)
        assert trainer.models.engine.weight_sync_error(trainer.models.policy) == 0.0  # the copy is the cast of the trainer's
        assert 0 < m["logprob_mismatch"] < m["logprob_mismatch_max"] < 0.5  # bfloat16 sampling is visible
        assert "is_weight_mean" in m
    # negative control: a push that does not reach the copy
    trainer.models.engine.update_weights = lambda model, version=None: None
    with torch.no_grad():
        next(trainer.models.policy.parameters()).add_(1e-2)
    with pytest.raises(RuntimeError, match="engine's copy of the weights differs"):
        trainer.push_weights()


def test_an_explicit_is_correction_setting_is_kept(tiny_dir, tmp_path):
    trainer = build(tiny_config(tiny_dir, tmp_path / "run", "rollout.dtype=bfloat16",
                                "algorithm.is_correction.enabled=false"))
    assert not trainer.cfg.algorithm.is_correction.enabled


def test_staleness_turns_the_is_correction_on_unless_the_recipe_sets_it(tiny_dir, tmp_path):
    cpu = torch.device("cpu")
    on = precision.resolve_automatic(tiny_config(tiny_dir, tmp_path, "rollout.max_staleness=1"), cpu, log=lambda *_: None)
    off = precision.resolve_automatic(tiny_config(tiny_dir, tmp_path, "rollout.max_staleness=1",
                                                  "algorithm.is_correction.enabled=false"), cpu, log=lambda *_: None)
    sync = precision.resolve_automatic(tiny_config(tiny_dir, tmp_path), cpu, log=lambda *_: None)
    assert on.algorithm.is_correction.enabled and not off.algorithm.is_correction.enabled
    assert not sync.algorithm.is_correction.enabled


def test_auto_picks_bfloat16_only_where_it_is_native(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    assert resolve_rollout_dtype("auto", torch.float32, cpu) == torch.bfloat16
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    assert resolve_rollout_dtype("auto", torch.float32, cpu) == torch.float32  # AVX2-only: costs nothing
    assert resolve_rollout_dtype(None, torch.float32, cpu) == torch.float32
    assert resolve_rollout_dtype("bfloat16", torch.float32, cpu) == torch.bfloat16


def test_auto_without_native_bfloat16_costs_nothing_and_says_so(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)  # an AVX2-only CPU
    logged: list[str] = []
    trainer = build(tiny_config(tiny_dir, tmp_path / "run", "rollout.dtype=auto"), log=logged.append)
    assert trainer.models.engine.model is trainer.models.policy  # no copy of the weights, nothing to refresh
    assert not trainer.cfg.algorithm.is_correction.enabled
    assert any(line.startswith("rollout dtype: float32 (rollout.dtype=auto: no native bfloat16") for line in logged)


def test_auto_falls_back_to_the_models_dtype_where_no_copy_is_possible(tiny_dir, tmp_path, monkeypatch):
    """The CPU recipes set rollout.dtype=auto; with LoRA on a bfloat16 CPU that must sample at the model's dtype
    (and say why), while an explicit bfloat16 asks for what cannot be done and is refused."""
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    lora = ["model.lora.rank=4", "model.lora.alpha=8"]
    logged: list[str] = []
    trainer = build(tiny_config(tiny_dir, tmp_path / "auto", "rollout.dtype=auto", *lora), log=logged.append)
    assert trainer.models.engine.model is trainer.models.policy and not trainer.cfg.algorithm.is_correction.enabled
    assert any(line.startswith("rollout dtype: float32 (rollout.dtype=auto: no separate rollout copy with LoRA")
               for line in logged)
    assert not any("no native bfloat16" in line for line in logged)
    with pytest.raises(ValueError, match="rollout.dtype=bfloat16 .* not with LoRA"):
        build(tiny_config(tiny_dir, tmp_path / "explicit", "rollout.dtype=bfloat16", *lora))


def test_the_cpu_recipes_sample_in_bfloat16_where_it_is_native():
    from rlvr.config import RECIPES_DIR, load_recipe, resolve

    paths = [Path(RECIPES_DIR) / "default.yaml", *sorted(Path(RECIPES_DIR).glob("*_cpu.yaml"))]
    assert len(paths) > 1
    for path in paths:
        assert resolve(load_recipe(path)).rollout.dtype == "auto", path.name


def test_a_shared_model_has_nothing_to_compare(tiny_dir, tmp_path):
    trainer = build(tiny_config(tiny_dir, tmp_path / "run"))
    assert trainer.models.engine.model is trainer.models.policy and trainer.models.engine.weight_sync_error(trainer.models.policy) is None


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
@pytest.mark.parametrize("overrides", [
    ["algorithm.is_correction.cap=1.0", "train.micro_batch_size=3"],
    ["algorithm.is_correction.level=sequence", "algorithm.is_correction.mode=mask", "algorithm.is_correction.cap=1.0",
     "algorithm.preset=dapo", "train.mini_batches=1", "algorithm.overlong.enabled=false", "train.micro_batch_size=5"],
], ids=["token-truncate", "dapo-sequence-mask"])
def test_on_policy_is_weights_come_from_the_updates_own_forward(tiny_dir, tmp_path, overrides):
    """One pass fewer, the same update: the weights pi_old / pi_sampler of an on-policy step taken from each
    micro-batch's forward give the gradient and the metrics of a separate pi_old pass over the whole batch."""
    def one_update(defer: bool):
        cfg = tiny_config(tiny_dir, tmp_path / f"defer-{defer}", "rollout.dtype=bfloat16", "rollout.max_new_tokens=6",
                          "optim.max_grad_norm=null", *overrides)
        trainer = build(cfg)
        trainer.defer_is_weights = defer
        passes, grads = [], []
        no_grad = trainer.forwards.logprobs
        trainer.forwards.logprobs = lambda *a, **k: passes.append(1) or no_grad(*a, **k)
        trainer.optimizers.policy.step = lambda: grads.append([p.grad.clone() for p in trainer.models.policy.parameters()
                                                       if p.grad is not None])
        m = trainer.step(PromptStream(trainer.models.task.examples("train"), cfg.seed), 1)
        return m, len(passes), grads[0]

    (deferred, deferred_passes, g_deferred), (separate, separate_passes, g_separate) = one_update(True), one_update(False)
    assert (deferred_passes, separate_passes) == (0, 1)
    for a, b in zip(g_deferred, g_separate, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    changed = "is_truncated_frac" if "is_truncated_frac" in separate else "is_masked_frac"
    assert 0 < separate[changed] < 1  # the weights are not all one: a gradient that ignored them would differ
    for k in ("is_weight_mean", "is_weight_max", changed, "logprob_mismatch", "is_ratio_std", "logprob_mismatch_max",
              "logprob_mismatch_p50", "logprob_mismatch_p99", "loss"):
        assert deferred[k] == pytest.approx(separate[k], rel=1e-5, abs=1e-7), k


def test_resume_keeps_the_automatic_choices_of_the_first_run(tiny_dir, tmp_path, monkeypatch):
    """`rollout.dtype: auto` on a bfloat16 CPU: Ctrl-C (here: 2 of 3 steps) then `rlvr train --resume` trains
    like the uninterrupted run, bit for bit. Guards config.yaml recording the automatic choices as made
    (rollout.dtype bfloat16, the IS correction on): it recorded the schema default is_correction.enabled:
    false, so the resumed run trained without the correction (step 3's is_weight_mean exactly 1.0)."""
    import json

    from rlvr.cli import main
    from rlvr.config import load_recipe

    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    common = [f"model.name={tiny_dir}", "model.device=cpu", "task.name=symbol", "task.template=chat",
              "rollout.prompts_per_step=4", "rollout.group_size=4", "rollout.max_new_tokens=4", "optim.lr=3e-3",
              "eval.every=0", "checkpoint.every=1", "log_samples=0", "rollout.dtype=auto"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["train", *common, "train.steps=3", f"run_dir={full}", "--no-progress"]) == 0
    assert main(["train", *common, "train.steps=2", f"run_dir={part}", "--no-progress"]) == 0
    recorded = load_recipe(part / "config.yaml")
    assert recorded["rollout"]["dtype"] == "bfloat16" and recorded["algorithm"]["is_correction"]["enabled"] is True
    assert main(["train", "--resume", str(part), "train.steps=3", "--no-progress"]) == 0

    def rows(run_dir):
        drop = {"step_time_s", "gen_time_s", "train_time_s", "gen_tokens_per_s"}
        return [{k: v for k, v in json.loads(line).items() if k not in drop}
                for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    a, b = rows(full), rows(part)
    assert [r["step"] for r in b] == [1, 2, 3]
    assert a[2]["is_weight_mean"] != 1.0  # the correction is at work in the uninterrupted run's step 3
    assert a == b
