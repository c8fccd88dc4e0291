"""`rlvr eval` on a tiny model directory saved in the test, and its error messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rlvr.cli import main
from rlvr.models.tiny import make_tiny_model_dir

ROWS = [
    {"question": "Tom has 2 apples and buys 3 more. How many apples?", "answer": "2 + 3 = 5\n#### 5"},
    {"question": "A box holds 4 pens. How many pens in 2 boxes?", "answer": "4 * 2 = 8\n#### 8"},
    {"question": "Sam had 9 cards and gave away 4. How many are left?", "answer": "9 - 4 = 5\n#### 5"},
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_cli")
    model_dir = make_tiny_model_dir(root / "model", seed=0)
    data = root / "gsm8k"
    data.mkdir()
    for split in ("train", "test"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return root, Path(model_dir), data


def run_cli(capsys, *argv):
    code = main(["eval", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_eval_model_dir_writes_outputs(files, capsys, tmp_path):
    _, model_dir, data = files
    out = tmp_path / "out"
    code, stdout, err = run_cli(
        capsys, model_dir, "--task", "gsm8k", "--data", data, "--limit", 2, "--n", 2, "--k", "1,2",
        "--max-new-tokens", 4, "--out", out,
    )
    assert code == 0, err
    report = json.loads((out / "eval.json").read_text())
    metrics, settings = report["metrics"], report["settings"]
    for name in ("pass@1", "pass@2", "mean@2", "response_len_mean", "truncated_frac", "entropy"):
        assert name in metrics and f"{name}_ci_low" in metrics
    assert 0 < metrics["response_len_mean"] <= 4
    assert settings["n"] == 2 and settings["k"] == [1, 2] and settings["num_problems"] == 2
    assert settings["task"] == "gsm8k" and settings["split"] == "test" and settings["data"] == str(data)
    assert settings["model"] == str(model_dir) and settings["run_dir"] is None
    lines = (out / "eval_samples.jsonl").read_text().splitlines()
    assert len(lines) == 4
    first = json.loads(lines[0])
    assert first["answer"] == "5" and first["question"].startswith(ROWS[0]["question"])
    assert "pass@2" in stdout and "95% CI" in stdout


def test_eval_run_dir_uses_latest_checkpoint_and_run_task(files, capsys, tmp_path):
    _, model_dir, data = files
    run_dir = tmp_path / "run"
    ckpt = run_dir / "checkpoints" / "step_000002"
    ckpt.mkdir(parents=True)
    (ckpt / "model").symlink_to(model_dir, target_is_directory=True)
    (run_dir / "checkpoints" / "latest").write_text("step_000002\n")
    config = {"task": {"name": "gsm8k", "kwargs": {"path": str(data)}, "template": "plain"}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    code, _, err = run_cli(capsys, run_dir, "--limit", 1, "--greedy", "--max-new-tokens", 3, "--no-entropy")
    assert code == 0, err
    report = json.loads((run_dir / "eval.json").read_text())
    settings = report["settings"]
    assert settings["model"] == str(ckpt / "model") and settings["run_dir"] == str(run_dir)
    assert settings["task"] == "gsm8k" and settings["template"] == "plain" and settings["temperature"] == 0.0
    assert "entropy" not in report["metrics"]
    sample = json.loads((run_dir / "eval_samples.jsonl").read_text().splitlines()[0])
    assert sample["problem_id"] and sample["finish_reason"] in ("stop", "length")
    # no --max-new-tokens: the run's own rollout.max_new_tokens on its own task, else the task's budget
    config["rollout"] = {"max_new_tokens": 2}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    code, _, err = run_cli(capsys, run_dir, "--limit", 1, "--greedy", "--no-entropy")
    assert code == 0, err
    assert json.loads((run_dir / "eval.json").read_text())["settings"]["max_new_tokens"] == 2


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--task", "gsm8kk"], "unknown task 'gsm8kk'"),
        (["--task", "gsm8k", "--data", "/nonexistent/gsm8k.jsonl"], "--data /nonexistent/gsm8k.jsonl: no such file"),
        (["--task", "arithmetic", "--data", "DATA"], "task 'arithmetic' takes no --data"),
        (["--task", "gsm8k", "--data", "DATA", "--n", "2", "--k", "1,4"], "k=[4]: pass@k needs 1 <= k <= n (n=2)"),
        (["--task", "gsm8k", "--data", "DATA", "--k", "one"], "expected comma-separated integers"),
        (["--task", "gsm8k", "--data", "DATA", "--n", "4", "--greedy"],
         "greedy decoding (or temperature 0) gives identical samples; use n=1"),
        (["--task", "gsm8k", "--data", "DATA", "--split", "dev"], "unknown split 'dev'"),
        (["--task", "gsm8k", "--data", "DATA", "--dtype", "float33"], "model.dtype: Input should be 'float32', 'bfloat16' or 'float16'"),
        # found by the engine, after loading: the tiny model's context is 512 tokens
        (["--task", "gsm8k", "--data", "DATA", "--max-new-tokens", "500"], "max_new_tokens=500"),
    ],
)
def test_bad_input_is_one_clear_line(files, capsys, extra, message):
    _, model_dir, data = files
    argv = [str(data) if a == "DATA" else a for a in extra]
    code, _, err = run_cli(capsys, model_dir, *argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_missing_model(files, capsys, tmp_path):
    _, _, data = files
    code, _, err = run_cli(capsys, tmp_path / "no_model", "--task", "gsm8k", "--data", data)
    assert code == 2 and "cannot load model" in err and "no such directory" in err


def test_run_dir_without_checkpoint(capsys, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("task: {name: gsm8k}\n")
    code, _, err = run_cli(capsys, run_dir)
    assert code == 2 and "has not saved a checkpoint yet" in err
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "latest").write_text("step_000005\n")
    code, _, err = run_cli(capsys, run_dir)
    assert code == 2 and "names 'step_000005'" in err and "does not exist" in err


def test_default_out_dir(files, capsys, tmp_path, monkeypatch):
    _, model_dir, data = files
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, model_dir, "--data", data, "--limit", 1, "--max-new-tokens", 2, "--no-entropy")
    assert code == 0, err
    (out,) = tmp_path.glob("eval_gsm8k_*")
    assert json.loads((out / "eval.json").read_text())["settings"]["task"] == "gsm8k"
    assert len((out / "eval_samples.jsonl").read_text().splitlines()) == 1
