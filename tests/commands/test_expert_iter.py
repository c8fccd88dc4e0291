"""`rlvr expert-iter`: the rows, samples and model of a run, and one-line errors."""

from __future__ import annotations

import json

from rlvr.cli import main


def test_cli_run_writes_rows_samples_and_model(tiny_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main([
        "expert-iter", "--model", str(tiny_dir), "--task", "symbol", "--template", "plain",
        "--task-kwargs", "symbols=ab", "n_variants=5", "--rounds", "2", "--prompts", "4", "--k", "4",
        "--max-new-tokens", "1", "--keep-truncated", "--lr", "1e-2", "--eval-size", "4", "--out", str(out),
        "--no-progress",
    ])
    err = capsys.readouterr().err
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1, 2]
    for row in rows[1:]:
        assert {"kept", "kept_frac", "sft_loss", "eval_accuracy", "eval_accuracy_greedy"} <= set(row)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 * 4 * 4
    for rnd in (1, 2):
        assert rows[rnd]["kept"] == sum(s["kept"] for s in samples if s["round"] == rnd)
    assert all(s["response"][:1] in "ab" for s in samples if s["kept"])
    assert (out / "model" / "model.safetensors").is_file()
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_000002"
    config = (out / "config.yaml").read_text()
    assert "symbols: ab" in config and "template: plain" in config


def test_cli_errors(tiny_dir, tmp_path, capsys):
    common = ["expert-iter", "--model", str(tiny_dir), "--out", str(tmp_path / "r")]
    assert main([*common, "--task", "symbol", "--temperature", "0"]) == 2
    assert "temperature must be > 0" in capsys.readouterr().err
    assert main([*common, "--task", "arithmetc"]) == 2
    assert "did you mean 'arithmetic'" in capsys.readouterr().err
    assert main([*common, "--task", "symbol", "--task-kwargs", "digits"]) == 2
    assert "is not KEY=VALUE" in capsys.readouterr().err
