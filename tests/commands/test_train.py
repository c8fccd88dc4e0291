"""`rlvr train`, `rlvr train --resume`, `rlvr plot` and `rlvr presets` through the command line."""

from __future__ import annotations

import json

import pytest

from rlvr.cli import main
from rlvr.config import PRESETS


def _args(tiny_dir, run_dir, steps):
    return [
        "train", f"model.name={tiny_dir}", "model.device=cpu", "task.name=symbol", "rollout.prompts_per_step=4",
        "rollout.group_size=4", "rollout.max_new_tokens=4", f"train.steps={steps}", "eval.every=0",
        "checkpoint.every=1", f"run_dir={run_dir}", "--no-progress",
    ]


def test_train_resume_and_plot_from_the_command_line(tiny_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(_args(tiny_dir, run_dir, 2)) == 0
    out = capsys.readouterr()
    assert "run summary" in out.out
    # An existing run directory is refused with the way out named.
    assert main(_args(tiny_dir, run_dir, 2)) == 2
    assert "--resume" in capsys.readouterr().err
    # Resume to a later step with an override.
    assert main(["train", "--resume", str(run_dir), "train.steps=3", "--no-progress"]) == 0
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step_000003"
    capsys.readouterr()
    assert main(["plot", str(run_dir)]) == 0
    written = capsys.readouterr().out.split()
    assert any(p.endswith("reward.png") for p in written) and (run_dir / "plots" / "overview.png").exists()


def test_plot_of_a_non_run_directory_is_a_clear_error(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "metrics.jsonl not found" in capsys.readouterr().out


def test_resume_needs_a_run_directory(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2
    assert "config.yaml not found" in capsys.readouterr().err


def test_cli_rejects_bad_config_before_any_work(capsys, tmp_path):
    code = main(["train", "rollout.group_sise=4", f"run_dir={tmp_path / 'r'}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "did you mean 'rollout.group_size'" in err
    assert not (tmp_path / "r").exists()


def test_cli_print_config_and_presets(capsys):
    assert main(["train", "--print-config", "algorithm.preset=ppo"]) == 0
    out = capsys.readouterr().out
    assert "advantage:\n    name: gae\n    gamma: 1.0\n    lam: 0.95\n    whiten: true" in out and "enabled: true" in out
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in PRESETS:
        assert name in out


@pytest.mark.parametrize(("override", "message"), [
    ("task.name=arithmetc", "invalid config: task: unknown task 'arithmetc'"),
    ("task.kwargs.digit=2", "did you mean 'task.kwargs.digits'"),
    ("task.reward=nothere.py:score", "file nothere.py not found"),
    ("logging.backends=[jsonl, tensorbord]", "unknown logging backend 'tensorbord'"),
    ("rollout.engine=vlm", "unknown rollout engine 'vlm'"),
])
def test_the_preflight_runs_before_any_work_and_before_print_config(override, message, capsys, tmp_path):
    """What only the installed code can tell (rlvr.train.preflight) stops `rlvr train` as a config error does."""
    for extra in ([f"run_dir={tmp_path / 'r'}"], ["--print-config"]):
        assert main(["train", override, *extra]) == 2
        captured = capsys.readouterr()
        assert captured.err.startswith("rlvr train: error: invalid config: ") and message in captured.err
        assert captured.out == "" and not (tmp_path / "r").exists()
