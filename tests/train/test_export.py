"""`rlvr export RUN_DIR [--step N] --out DIR`: a plain Hugging Face model with a model card."""

from __future__ import annotations

import pytest
import torch

from rlvr.cli import main
from rlvr.commands.export import export


def test_export_a_chosen_step_with_its_card(tiny_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", f"model.name={tiny_dir}", "model.device=cpu", "task.name=symbol", "rollout.prompts_per_step=2",
                 "rollout.group_size=4", "rollout.max_new_tokens=4", "train.steps=2", "eval.every=1", "eval.size=4",
                 "checkpoint.every=1", "checkpoint.keep_last=2", f"run_dir={run}", "--no-progress"]) == 0
    assert main(["export", str(run), "--step", "1", "--out", str(tmp_path / "one")]) == 0
    assert main(["export", str(run), "--out", str(tmp_path / "last")]) == 0
    from transformers import AutoModelForCausalLM

    one = AutoModelForCausalLM.from_pretrained(tmp_path / "one")
    last = AutoModelForCausalLM.from_pretrained(tmp_path / "last")
    saved = AutoModelForCausalLM.from_pretrained(run / "checkpoints" / "step_000001" / "model")
    for (name, a), b, c in zip(one.state_dict().items(), saved.state_dict().values(), last.state_dict().values()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, c) for a, c in zip(one.state_dict().values(), last.state_dict().values()))
    card = (tmp_path / "one" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers") and "algorithm `grpo`" in card
    assert "checkpoint step 1" in card and "Held-out metrics at step 1" in card and "| eval_accuracy |" in card
    assert "rollout:\n  engine: hf" in card  # the run's config
    capsys.readouterr()
    assert main(["export", str(run), "--step", "7", "--out", str(tmp_path / "x")]) == 2
    assert "no checkpoint of step 7 (it has: 1, 2" in capsys.readouterr().err


def test_export_of_a_directory_without_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no checkpoint"):
        export(tmp_path, tmp_path / "out")


def test_the_card_reads_gzipped_metrics(tmp_path):
    """A finished study run keeps its metrics as metrics.jsonl.gz; the card still shows its held-out metrics."""
    import json

    from rlvr.logging.jsonl import compress_jsonl
    from rlvr.train.export import model_card

    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "step_000002"
    ckpt.mkdir(parents=True)
    (run / "config.yaml").write_text("algorithm:\n  preset: rloo\ntask:\n  name: symbol\n")
    plain = run / "metrics.jsonl"
    plain.write_text("".join(json.dumps(r) + "\n" for r in [
        {"step": 1, "eval_accuracy": 0.25}, {"step": 2, "eval_accuracy": 0.5}, {"step": 3, "eval_accuracy": 0.75}]))
    compress_jsonl(plain)
    plain.unlink()
    card = model_card(run, ckpt)
    assert "Held-out metrics at step 2" in card and "| eval_accuracy | 0.5 |" in card and "algorithm `rloo`" in card
