"""Asynchronous collection with bounded staleness (rollout.max_staleness, rlvr.train.pipeline) on the tiny model,
with the engine in a rollout worker process."""

from __future__ import annotations

import copy
import json
import os
import signal
import time

import pytest
import torch

from rlvr.models.logprobs import response_logprobs
from rlvr.train.runner import train
from tests.tiny_run import sigterm_after_rows, tiny_config

TIMING_KEYS = ("_s", "per_s")


def _rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.endswith(TIMING_KEYS)} for r in rows]


SMALL = ("rollout.prompts_per_step=4", "rollout.group_size=4", "train.steps=5")


@pytest.mark.parametrize("k", [1, 2])
def test_two_fresh_runs_are_identical_and_no_batch_is_older_than_its_bound(tiny_dir, tmp_path, k):
    a = _rows(train(tiny_config(tiny_dir, tmp_path / "a", *SMALL, f"rollout.max_staleness={k}"), progress=False))
    b = _rows(train(tiny_config(tiny_dir, tmp_path / "b", *SMALL, f"rollout.max_staleness={k}"), progress=False))
    assert a == b
    for row in a:
        t = row["step"]
        assert row["sampled_after_step"] == max(0, t - 1 - k)  # the deterministic schedule
        assert row["staleness"] == min(t - 1, k) <= k
        assert row["policy_version"] == t  # one optimizer step per step: versions count steps here
    assert a[-1]["staleness"] == k and 0 < a[-1]["is_weight_mean"]  # the IS correction is on by default


def _policy_logprobs(model, state, batch, pad):
    model = copy.deepcopy(model)
    model.load_state_dict(state)
    t = batch.to_tensors(pad)
    with torch.no_grad():
        lp, _ = response_logprobs(model, t["input_ids"], t["attention_mask"], t["loss_mask"].shape[1], packed=False)
    return lp, t["loss_mask"]


def test_the_behaviour_correction_uses_the_sampling_weights(tiny_dir, tmp_path):
    """By hand, step by step: the engine's log-probs are those of the weights after step max(0, t - 2) (K = 1),
    and the IS weights compare them with the trainer's current ones (after step t - 1)."""
    from rlvr.train.build import build
    from rlvr.train.data import PromptStream
    from rlvr.train.precision import resolve_automatic

    cfg = resolve_automatic(tiny_config(tiny_dir, tmp_path / "run", *SMALL, "rollout.max_staleness=1"),
                            torch.device("cpu"), log=lambda *_: None)
    trainer = build(cfg, log=lambda *_: None)
    stream = PromptStream(trainer.models.task.examples("train"), cfg.seed)
    policy, pad = trainer.models.policy, trainer.models.pad_id
    after = {0: copy.deepcopy(policy.state_dict())}
    try:
        for t in range(1, 5):
            metrics = trainer.step(stream, t)
            batch = trainer.last_rollouts
            sampler = torch.tensor([[lp for lp in row] + [0.0] * (max(map(len, batch.sampler_logprobs)) - len(row))
                                    for row in batch.sampler_logprobs])
            mu, mask = _policy_logprobs(policy, after[max(0, t - 2)], batch, pad)
            assert torch.allclose(sampler[mask], mu[mask], atol=1e-5)  # sampled with the weights after step t - 2
            old, _ = _policy_logprobs(policy, after[t - 1], batch, pad)
            assert metrics["logprob_mismatch"] == pytest.approx(float((old - mu)[mask].abs().mean()), rel=1e-4, abs=1e-6)
            w = torch.exp(old - mu)[mask].clamp(max=cfg.algorithm.is_correction.cap)
            assert metrics["is_weight_mean"] == pytest.approx(float(w.mean()), rel=1e-4)
            if t >= 2:
                assert metrics["logprob_mismatch"] > 1e-3  # the weights did differ: the check above can fail
            after[t] = copy.deepcopy(policy.state_dict())
    finally:
        trainer.close()
        trainer.models.engine.close()


def test_a_killed_worker_stops_the_run_with_its_error(tiny_dir, tmp_path):
    from rlvr.train.build import build
    from rlvr.train.data import PromptStream

    cfg = tiny_config(tiny_dir, tmp_path / "run", *SMALL, "rollout.max_staleness=1", "rollout.worker_timeout_s=30")
    trainer = build(cfg, log=lambda *_: None)
    stream = PromptStream(trainer.models.task.examples("train"), cfg.seed)
    try:
        trainer.step(stream, 1)
        os.kill(trainer.models.engine.process.pid, signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match=r"rollout worker process \(hf\) died \(killed by signal 9\)"):
            for t in range(2, 6):
                trainer.step(stream, t)
        assert time.monotonic() - t0 < 30
    finally:
        trainer.close()
        trainer.models.engine.close()


def test_an_interrupted_run_resumes_exactly(tiny_dir, tmp_path, monkeypatch):
    """The checkpoint after step 2 holds step 3's batch, sampled before it with the weights after step 1."""
    from rlvr.train.trainer import Trainer

    overrides = (*SMALL, "rollout.max_staleness=1", "checkpoint.every=2")
    full = _rows(train(tiny_config(tiny_dir, tmp_path / "full", *overrides), progress=False))
    step = Trainer.step

    def failing(self, stream, t):
        if t == 3:
            raise RuntimeError("interrupted")
        return step(self, stream, t)

    monkeypatch.setattr(Trainer, "step", failing)
    with pytest.raises(RuntimeError, match="interrupted"):
        train(tiny_config(tiny_dir, tmp_path / "part", *overrides), progress=False)
    monkeypatch.setattr(Trainer, "step", step)
    state = torch.load(tmp_path / "part" / "checkpoints" / "step_000002" / "trainer.pt", weights_only=False)
    assert [item.step for item in state["async_pending"]] == [3]
    part = _rows(train(tiny_config(tiny_dir, tmp_path / "part", *overrides), resume=True, progress=False))
    assert part == full


def test_the_engine_in_its_own_process_changes_nothing(tiny_dir, tmp_path):
    """K = 0 with the engine in a worker process: the same samples and updates as the engine in the trainer's."""
    local = _rows(train(tiny_config(tiny_dir, tmp_path / "local", *SMALL, "eval.every=5", "eval.size=4"), progress=False))
    worker = _rows(train(tiny_config(tiny_dir, tmp_path / "worker", *SMALL, "eval.every=5", "eval.size=4",
                                     "rollout.worker=process", "rollout.worker_threads=1"), progress=False))
    assert worker == local and [r["step"] for r in local] == [0, 1, 2, 3, 4, 5, 5]


def test_sigterm_drains_checkpoints_and_resumes(tiny_dir, tmp_path):
    """As a scheduler would: SIGTERM finishes the step, keeps the batch sampled ahead, exits 0; --resume goes on."""
    import subprocess
    import sys

    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "rlvr", "train", f"model.name={tiny_dir}", "model.device=cpu", "task.name=symbol",
           "rollout.prompts_per_step=4", "rollout.group_size=4", "rollout.max_new_tokens=4", "train.steps=2000",
           "eval.every=0", "checkpoint.every=0", "rollout.max_staleness=1", f"run_dir={run_dir}", "--no-progress"]
    metrics = run_dir / "metrics.jsonl"
    code, _, err = sigterm_after_rows(cmd, metrics)
    assert code == 0, err[-2000:]
    last = json.loads(metrics.read_text().splitlines()[-1])["step"]
    state = torch.load(run_dir / "checkpoints" / f"step_{last:06d}" / "trainer.pt", weights_only=False)
    assert [item.step for item in state["async_pending"]] == [last + 1]
    resumed = subprocess.run([*cmd[:-2], f"train.steps={last + 2}", "--resume", str(run_dir), "--no-progress"],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == list(range(1, last + 3))


def test_r3_replays_the_routes_the_worker_sampled_with(tiny_moe_dir, tmp_path):
    """A mixture-of-experts policy at K = 1: the worker's engine records its routes and they come back with the
    batch; at step 1 (weights not yet stale) the trainer's old-policy routers agree with them exactly."""
    rows = _rows(train(tiny_config(tiny_moe_dir, tmp_path / "run", *SMALL, "train.steps=3", "rollout.max_staleness=1",
                                   "algorithm.routing_replay=r3"), progress=False))
    assert rows[0]["routing_mismatch_rollout"] == 0.0
    assert [r["staleness"] for r in rows] == [0, 1, 1] and all(0 <= r["routing_mismatch_rollout"] <= 1 for r in rows)
