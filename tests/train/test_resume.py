"""Resume, run directories, checkpoints and faults of `rlvr.train.runner.train` on the tiny model."""

from __future__ import annotations

import json

import pytest
import torch

from rlvr.train.runner import RunDirExists, train
from tests.tiny_run import ListConsole, tiny_config

TIMING_KEYS = {"step_time_s", "gen_time_s", "train_time_s", "gen_tokens_per_s"}


def _rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def test_resumed_run_logs_the_same_metrics_as_an_uninterrupted_one(tiny_dir, tmp_path):
    overrides = ["train.steps=4", "train.epochs=2", "train.mini_batches=2", "algorithm.kl.coef=0.05"]
    full = train(tiny_config(tiny_dir, tmp_path / "full", *overrides), progress=False)
    # Stop after step 2 (its final checkpoint), then resume to step 4.
    part = tmp_path / "part"
    train(tiny_config(tiny_dir, part, *[o if o != "train.steps=4" else "train.steps=2" for o in overrides]), progress=False)
    train(tiny_config(tiny_dir, part, *overrides), resume=True, progress=False)
    a, b = _rows(full), _rows(part)
    assert [r["step"] for r in a] == [1, 2, 3, 4]
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a[2:], b[2:]):
        assert ra.keys() == rb.keys()
        for key in ra:
            if ra[key] is None or rb[key] is None:
                assert ra[key] == rb[key], key
            else:
                assert ra[key] == pytest.approx(rb[key], rel=1e-6, abs=1e-7), key


def test_run_directory_contents(tiny_dir, tmp_path):
    run_dir = train(tiny_config(tiny_dir, tmp_path / "run", "eval.every=2", "eval.size=8"), progress=False)
    assert (run_dir / "config.yaml").exists()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "reward_mean" in r]
    eval_rows = [r for r in rows if "eval_accuracy" in r]
    required = {
        "step", "reward_mean", "reward_std", "accuracy", "response_len_mean", "truncated_frac", "entropy",
        "clip_frac_low", "clip_frac_high", "grad_norm", "lr", "is_weight_mean", "logprob_mismatch",
        "step_time_s", "gen_time_s", "train_time_s", "gen_tokens_per_s",
    }
    assert required <= set(train_rows[0]), required - set(train_rows[0])
    assert [r["step"] for r in eval_rows] == [0, 2, 4]
    assert all("eval_accuracy_greedy" in r for r in eval_rows)
    # The hf engine samples from exactly the policy the trainer scores.
    assert train_rows[0]["logprob_mismatch"] < 1e-4
    r = train_rows[0]  # the mismatch's spread over tokens, every step
    assert r["logprob_mismatch_p50"] <= r["logprob_mismatch_p90"] <= r["logprob_mismatch_p99"] <= r["logprob_mismatch_max"]
    assert r["logprob_mismatch"] <= r["logprob_mismatch_max"] < 1e-4
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert {"prompt", "response", "reward"} <= set(samples[0])
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    ckpt = run_dir / "checkpoints" / latest
    assert (ckpt / "model" / "model.safetensors").exists() and (ckpt / "trainer.pt").exists()
    state = torch.load(ckpt / "trainer.pt", weights_only=False)
    assert {"scheduler", "rng", "data", "step"} <= set(state) and state["optimizer_format"] == "dcp"
    # the optimizer state: torch.distributed.checkpoint's format (metadata + each rank's shards)
    assert (ckpt / "optimizer" / ".metadata").exists() and list((ckpt / "optimizer").glob("*.distcp"))
    assert not list((run_dir / "checkpoints").glob(".*"))  # no staging directory left behind
    assert (run_dir / "plots" / "reward.png").exists()


def test_existing_run_dir_is_refused(tiny_dir, tmp_path):
    cfg = tiny_config(tiny_dir, tmp_path / "run", "train.steps=1")
    train(cfg, progress=False)
    with pytest.raises(RunDirExists, match="--resume"):
        train(cfg, progress=False)
    train(cfg, overwrite=True, progress=False)


def test_ctrl_c_finishes_the_step_and_writes_a_checkpoint(tiny_dir, tmp_path, monkeypatch):
    import os
    import signal

    from rlvr.train.trainer import Trainer

    original = Trainer.step

    def run_then_interrupt(self, stream, step):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of step 2
        return original(self, stream, step)

    monkeypatch.setattr(Trainer, "step", run_then_interrupt)
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tiny_dir, run_dir, "train.steps=5"), progress=False)
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step_000002"


def test_sigterm_finishes_the_step_checkpoints_and_returns(tiny_dir, tmp_path):
    """SIGTERM (a cluster's preemption notice) is handled like the first Ctrl-C, but the run ends normally
    (the command exits 0), and --resume continues it. Run as a real process, as a scheduler would."""
    import json
    import sys

    from tests.tiny_run import sigterm_after_rows

    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "rlvr", "train", f"model.name={tiny_dir}", "model.device=cpu", "task.name=symbol",
           "rollout.prompts_per_step=8", "rollout.max_new_tokens=4", "train.steps=2000", "eval.every=0",
           "checkpoint.every=0", f"run_dir={run_dir}", "--no-progress"]
    metrics = run_dir / "metrics.jsonl"
    code, out, err = sigterm_after_rows(cmd, metrics)
    assert code == 0, err[-2000:]
    assert "SIGTERM: finishing this step" in out + err
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    assert latest == f"step_{steps[-1]:06d}" and steps[-1] < 2000


def test_a_raising_reward_is_contained_and_counted(tiny_dir, tmp_path, monkeypatch):
    from rlvr.tasks import get_task

    task_cls = type(get_task("symbol"))
    original = task_cls.score

    def flaky(self, response, example):
        if len(response) % 2:
            raise RuntimeError("verifier exploded")
        return original(self, response, example)

    monkeypatch.setattr(task_cls, "score", flaky)
    logged = []
    run_dir = train(tiny_config(tiny_dir, tmp_path / "run", "train.steps=2"), progress=False,
                    console=ListConsole(logged))
    rows = _rows(run_dir)
    assert rows[-1]["reward_errors"] > 0
    assert sum("verifier exploded" in line for line in logged) == 1


def test_non_finite_loss_skips_then_stops(tiny_dir, tmp_path, monkeypatch):
    from rlvr.core import objective

    def nan_loss(name, **kwargs):
        per_token = kwargs["logprobs"] * float("nan")
        return per_token, {}

    monkeypatch.setattr(objective, "policy_loss", nan_loss)
    with pytest.raises(FloatingPointError, match="non-finite"):
        train(tiny_config(tiny_dir, tmp_path / "run", "train.steps=5", "train.max_bad_steps=2"), progress=False)


def test_greedy_held_out_eval_of_repeated_problems_equals_the_full_one(tiny_dir, tmp_path, monkeypatch):
    from rlvr.eval import evaluate
    from rlvr.rewards.base import RewardResult
    from rlvr.train.build import build
    from rlvr.train.held_out import held_out_eval

    cfg = tiny_config(tiny_dir, tmp_path / "run", "task.name=arithmetic", "rollout.max_new_tokens=3")
    trainer = build(cfg)
    examples = trainer.models.task.examples("test", limit=50)
    key = [ex.meta.get("problem_id", ex.id) for ex in examples]
    assert len(set(key)) == 20  # 20 held-out problems, repeated unevenly (3 or 2 times) in 50 examples
    # Make correctness depend on the problem only, so that the weighting of repeats decides the figure.
    good = set(key[:7])
    monkeypatch.setattr(trainer.models.task, "score", lambda response, ex: RewardResult(
        reward=0.0, correct=ex.meta.get("problem_id", ex.id) in good, components={}))
    row = held_out_eval(trainer, examples, step=0)
    full = evaluate(trainer.models.policy, trainer.models.tokenizer, trainer.models.task, examples, n=1, temperature=0.0,
                    max_new_tokens=3, engine=trainer.models.engine, with_entropy=False)
    assert row["eval_accuracy_greedy"] == pytest.approx(full.metrics["mean@1"])
    assert full.metrics["mean@1"] == pytest.approx(sum(k in good for k in key) / 50)
    assert full.metrics["mean@1"] != pytest.approx(7 / 20)


def test_a_finished_study_run_with_gzipped_metrics_counts_its_steps(tmp_path):
    """A study keeps each finished run's metrics as metrics.jsonl.gz: the run still counts its steps, so a
    rerun into it without --overwrite is refused rather than replacing it."""
    import gzip
    import json

    from rlvr.train.run_dir import completed_steps

    rows = "".join(json.dumps({"step": s, "reward_mean": 0.5}) + "\n" for s in (1, 2, 3))
    (tmp_path / "metrics.jsonl.gz").write_bytes(gzip.compress(rows.encode()))
    assert completed_steps(tmp_path) == 3
