"""Experiment trackers: a tiny run writes real TensorBoard events, a real MLflow file store and a W&B
offline run; each is read back and holds the run's metrics, config and plots."""

from __future__ import annotations

import glob
import importlib.util
import json

import pytest

from rlvr.config import ConfigError, resolve
from rlvr.logging.trackers import backend_problems
from rlvr.train.preflight import preflight
from rlvr.train.runner import train
from tests.tiny_run import tiny_config


def _metrics(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "reward_mean" in r]


def test_unknown_or_missing_backends_are_config_errors(monkeypatch):
    with pytest.raises(ConfigError, match="unknown logging backend 'tensorbord'.*did you mean 'tensorboard'"):
        preflight(resolve({}, ["logging.backends=[jsonl, tensorbord]"]))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    assert backend_problems(["wandb"]) == [
        "logging.backends includes 'wandb' but wandb is not installed: pip install wandb (or pip install 'rlvr[wandb]')"]


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed")
def test_tensorboard_events_hold_the_metrics_config_and_plots(tiny_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = train(tiny_config(tiny_dir, tmp_path / "run", "logging.backends=[tensorboard]", "train.steps=3"),
                    progress=False)
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    rewards = [(e.step, e.value) for e in events.Scalars("reward_mean")]
    expected = [(r["step"], r["reward_mean"]) for r in _metrics(run_dir)]
    assert [s for s, _ in rewards] == [1, 2, 3]
    assert [v for _, v in rewards] == pytest.approx([v for _, v in expected])
    assert any(tag.startswith("plots/") for tag in tags["images"])
    assert "config/text_summary" in tags["tensors"]


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed")
def test_a_resumed_run_replaces_the_tensorboard_steps_after_its_checkpoint(tiny_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    train(tiny_config(tiny_dir, run, "logging.backends=[tensorboard]", "train.steps=2"), progress=False)
    train(tiny_config(tiny_dir, run, "logging.backends=[tensorboard]", "train.steps=4"), resume=True, progress=False)
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("reward_mean")] == [1, 2, 3, 4]


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow not installed")
def test_mlflow_file_store_holds_the_metrics_params_and_plots(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "rlvr-test")
    run_dir = train(tiny_config(tiny_dir, tmp_path / "run", "logging.backends=[jsonl, mlflow]", "train.steps=3"),
                    progress=False)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "rlvr-test"
    assert run.data.params["algorithm.preset"] == "grpo" and run.data.params["rollout.group_size"] == "8"
    history = client.get_metric_history(run_id, "reward_mean")
    expected = {r["step"]: r["reward_mean"] for r in _metrics(run_dir)}
    assert {m.step: m.value for m in history} == pytest.approx(expected)
    artifacts = {a.path for a in client.list_artifacts(run_id)} | {a.path for a in client.list_artifacts(run_id, "plots")}
    assert "config.yaml" in artifacts and any(p.startswith("plots/") and p.endswith(".png") for p in artifacts)


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb not installed")
def test_wandb_offline_run_is_written(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    run_dir = train(tiny_config(tiny_dir, tmp_path / "run", "logging.backends=[wandb]", "train.steps=2"),
                    progress=False)
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    files = glob.glob(str(run_dir / "wandb" / f"offline-run-*-{run_id}" / f"run-{run_id}.wandb"))
    assert len(files) == 1
    data = open(files[0], "rb").read()
    for key in (b"reward_mean", b"grad_norm", b"group_size"):  # metrics and config, in the run's record log
        assert key in data, key
