"""A newcomer's first hour with `rlvr train`: one-line errors, retries that just work, flags anywhere,
a line per step without a terminal, checkpoint sizes, model-only checkpoints, and a run that trains
nothing stopping with the reason."""

from __future__ import annotations

import json

import pytest

from rlvr.cli import main

SMALL = ["model.device=cpu", "task.name=symbol", "rollout.prompts_per_step=2", "rollout.group_size=4",
         "rollout.max_new_tokens=4", "eval.every=0"]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one line, no traceback
    return err[0]


@pytest.fixture()
def data(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "train.jsonl").write_text('{"question": "1+1", "answer": "2"}\n{"question": "2+2", "answer": \n')
    (d / "test.jsonl").write_text('{"question": "3+3", "answer": "6"}\n')
    good = tmp_path / "good"
    good.mkdir()
    (good / "train.jsonl").write_text('{"question": "1+1", "answer": "2"}\n')
    (good / "test.jsonl").write_text('{"question": "3+3", "answer": "6"}\n')
    return d


@pytest.mark.parametrize(("extra", "expected"), [
    (["task.name=jsonl", "task.kwargs.path={data}"], "train.jsonl:2: malformed JSON"),
    (["task.name=jsonl", "task.kwargs.path={data}/../nowhere"], "dataset path"),
    (["task.name=jsonl", "task.kwargs.path={data}/../good", "task.kwargs.question_field=q"], "test.jsonl:1: missing field 'q'"),
    (["task.name=jsonl", "task.kwargs.path={data}", "task.kwargs.reward=maht"], "did you mean 'math'"),
    (["task.reward=nothere.py:score"], "file nothere.py not found"),
    (["model.name=/nonexistent/model"], "no such directory: '/nonexistent/model'"),
    (["rollout.engine=vlm"], "unknown rollout engine 'vlm'"),
    (["algorithm.preset=grpoo"], "did you mean 'grpo'"),
])
def test_bad_input_is_one_line_naming_the_problem(tiny_dir, tmp_path, data, capsys, extra, expected):
    args = ["train", f"model.name={tiny_dir}", *SMALL, *[e.format(data=data) for e in extra],
            f"run_dir={tmp_path / 'run'}"]
    assert main(args) == 2
    line = _one_error_line(capsys)
    assert line.startswith("rlvr train: error:") and expected in line, line


def test_a_hub_id_without_network_fails_at_once(tiny_dir, tmp_path, capsys, monkeypatch):
    import socket

    def unreachable(*args, **kwargs):
        raise socket.gaierror("Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unreachable)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert main(["train", "model.name=someorg/not-cached-model", *SMALL, f"run_dir={tmp_path / 'r'}"]) == 2
    line = _one_error_line(capsys)
    assert "not in the Hugging Face cache" in line and "huggingface.co cannot be reached" in line


def test_a_yaml_error_names_the_recipe_file_line_and_column(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("name: x\ntask: {name: arithmetic\n")
    assert main(["train", str(recipe)]) == 2
    line = _one_error_line(capsys)
    assert f"{recipe}:3:1: YAML syntax error" in line


def test_debug_shows_the_traceback(tiny_dir, tmp_path):
    with pytest.raises(Exception, match="unknown rollout engine"):
        main(["train", "--debug", f"model.name={tiny_dir}", *SMALL, "rollout.engine=vlm"])


def test_flags_anywhere_a_retry_that_just_works_and_a_line_per_step(tiny_dir, tmp_path, capsys):
    run = tmp_path / "run"
    # A run that fails before its first step (a bad data path) leaves its directory behind ...
    assert main(["train", f"model.name={tiny_dir}", *SMALL, "task.name=jsonl", "task.kwargs.path=/nowhere",
                 f"run_dir={run}"]) == 2
    assert run.exists()
    capsys.readouterr()
    # ... and the corrected command reuses it; --no-progress sits between the overrides.
    assert main(["train", f"model.name={tiny_dir}", "--no-progress", *SMALL, "train.steps=2", f"run_dir={run}"]) == 0
    out = capsys.readouterr().out
    assert f"reusing {run}" in out and f"run directory: {run}" in out and f"done: {run}" in out
    step_lines = [line for line in out.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in step_lines] == ["1/2", "2/2"] and "reward" in step_lines[0]
    assert "checkpoint step_000002:" in out and "free on its disk" in out
    # A directory with completed steps is kept, and the way out is named.
    assert main(["train", f"model.name={tiny_dir}", *SMALL, f"run_dir={run}"]) == 2
    line = _one_error_line(capsys)
    assert "holds 2 completed step(s)" in line and f"run_dir={run}-2" in line


def test_a_run_changed_to_another_preset_or_task_is_named_for_it():
    from rlvr.config import load_recipe, resolve

    assert resolve(load_recipe("default"), []).name == "grpo-addition"
    assert resolve(load_recipe("default"), ["algorithm.preset=dapo", "task.name=countdown"]).name == "dapo-countdown"
    assert resolve(load_recipe("default"), ["task.name=gsm8k"]).name == "grpo-gsm8k"
    assert resolve(load_recipe("default"), ["algorithm.preset=rloo", "name=mine"]).name == "mine"


def test_model_only_checkpoints_resume_with_a_fresh_optimizer(tiny_dir, tmp_path, capsys):
    run = tmp_path / "run"
    base = ["train", f"model.name={tiny_dir}", *SMALL, "--no-progress", "checkpoint.every=1"]
    assert main([*base, "train.steps=2", "checkpoint.optimizer=false", f"run_dir={run}"]) == 0
    import torch

    state = torch.load(run / "checkpoints" / "step_000002" / "trainer.pt", weights_only=False)
    assert "optimizer" not in state and not (run / "checkpoints" / "step_000002" / "optimizer").exists()
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == ["step_000002"]  # keep_last: 1
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "train.steps=3", "--no-progress"]) == 0
    assert "the optimizer restarts" in capsys.readouterr().out


def test_dynamic_sampling_that_trains_nothing_stops_with_the_reason(tiny_dir, tmp_path, capsys, monkeypatch):
    (tmp_path / "zero.py").write_text("def score(response, answer):\n    return 0.0\n")
    monkeypatch.chdir(tmp_path)
    args = ["train", f"model.name={tiny_dir}", *SMALL, "algorithm.preset=dapo", "algorithm.overlong.enabled=false",
            "task.reward=zero.py:score", "task.reward_timeout_s=null", "train.steps=10",
            "algorithm.dynamic_sampling.max_no_signal_steps=3", "algorithm.dynamic_sampling.max_rounds=1",
            f"run_dir={tmp_path / 'run'}", "--no-progress"]
    assert main(args) == 1
    captured = capsys.readouterr()
    said = [line for line in captured.out.splitlines() if "dynamic sampling kept no group" in line]
    assert len(said) == 3 and "no sample earned any reward" in said[0]
    assert captured.err.strip().startswith("rlvr train: stopped: 3 steps in a row in which no sample earned any reward")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["no_signal_step"] for r in rows] == [1.0, 1.0] and rows[-1]["no_signal_steps"] == 2.0
