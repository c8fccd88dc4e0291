"""`rlvr train`, `rlvr train --resume`, `rlvr plot` and `rlvr presets` through the command line."""

from __future__ import annotations

import json

from rlvr.cli import main


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
