"""`rlvr sft`: a run directory `rlvr eval` reads, and one-line errors naming the file, line, field or option."""

from __future__ import annotations

import json

import pytest

from rlvr.cli import main


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_dir):
    root = tmp_path_factory.mktemp("sft_cli")
    rows = [{"prompt": f"#{i:02d} Say: {s}", "response": s * 4} for i in range(6) for s in "abcd"]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    return root


def run_cli(capsys, *argv):
    code = main(["sft", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_writes_metrics_model_and_an_evaluable_run_dir(data, tiny_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli(
        capsys, "--model", tiny_dir, "--data", data / "train.jsonl", "--eval-data", data / "test.jsonl",
        "--task", "symbol", "--template", "plain", "--eval-size", 8, "--max-new-tokens", 4,
        "--epochs", 2, "--lr", "1e-2", "--batch-size", 8, "--micro-batch-size", 4, "--out", out, "--no-progress",
    )
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    eval_rows = [r for r in rows if "eval_loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4, 5, 6]
    assert [(r["epoch"], r["step"]) for r in eval_rows] == [(0, 0), (1, 3), (2, 6)]
    assert all(0 <= r["eval_accuracy_greedy"] <= 1 for r in eval_rows)
    assert eval_rows[-1]["eval_loss"] < eval_rows[0]["eval_loss"]
    assert (out / "model" / "config.json").is_file()
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_000006"
    # `rlvr eval RUN_DIR` loads the final model with this run's task and template
    assert main(["eval", str(out), "--n", "1", "--max-new-tokens", "2", "--no-entropy", "--limit", "4"]) == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["settings"]["task"] == "symbol" and report["settings"]["template"] == "plain"


def test_cli_malformed_line_names_file_and_line(data, tiny_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "a", "response": \n')
    code, _, err = run_cli(capsys, "--model", tiny_dir, "--data", bad, "--out", tmp_path / "r", "--template", "plain")
    assert code == 2 and f"{bad}:2: malformed JSON" in err


def test_cli_missing_field_names_the_fields_present(data, tiny_dir, tmp_path, capsys):
    bad = tmp_path / "fields.jsonl"
    bad.write_text('{"question": "a", "answer": "b"}\n')
    code, _, err = run_cli(capsys, "--model", tiny_dir, "--data", bad, "--out", tmp_path / "r")
    assert code == 2
    assert f"{bad}:1: missing field 'prompt'; the row has fields: question, answer" in err
    code, _, err = run_cli(capsys, "--model", tiny_dir, "--data", bad, "--out", tmp_path / "r",
                           "--prompt-field", "question", "--response-field", "solution")
    assert code == 2 and "missing field 'solution'" in err


def test_cli_refuses_to_overwrite_and_names_bad_options(data, tiny_dir, tmp_path, capsys):
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    common = ["--model", tiny_dir, "--data", data / "train.jsonl", "--template", "plain"]
    code, _, err = run_cli(capsys, *common, "--out", out)
    assert code == 2 and "already exists; pass --overwrite" in err and (out / "keep.txt").exists()
    code, _, err = run_cli(capsys, *common, "--out", tmp_path / "r", "--aggregation", "mean")
    assert code == 2 and "unknown aggregation 'mean'" in err
    code, _, err = run_cli(capsys, *common, "--out", tmp_path / "r", "--task", "symbl")
    assert code == 2 and "symbol" in err
    code, _, err = run_cli(capsys, *common, "--out", tmp_path / "r", "--task", "symbol", "--task-kwargs", "nvariants=3")
    assert code == 2 and "has no option 'nvariants'" in err


def test_cli_accepts_chat_message_prompts(tiny_dir, tmp_path, capsys):
    rows = [{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say: a"}], "response": "a"}] * 3
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, _, err = run_cli(capsys, "--model", tiny_dir, "--data", path, "--out", tmp_path / "r", "--no-progress")
    assert code == 0, err
    bad = tmp_path / "badprompt.jsonl"
    bad.write_text(json.dumps({"prompt": 3, "response": "a"}) + "\n")
    code, _, err = run_cli(capsys, "--model", tiny_dir, "--data", bad, "--out", tmp_path / "r2")
    assert code == 2 and f"{bad}:1: field 'prompt' must be a string or a list" in err
