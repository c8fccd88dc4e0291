"""sft, expert-iter and eval take a recipe, dotted overrides and --print-config, like train."""

from __future__ import annotations

import json

import yaml

from rlvr.cli import main


def _printed(capsys, *argv) -> dict:
    assert main(list(map(str, argv))) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_sft_recipe_flags_and_overrides_in_one_config(tmp_path, capsys):
    recipe = tmp_path / "sft.yaml"
    recipe.write_text("run_dir: runs/sft\ndata: {path: train.jsonl}\nsft: {lr: 3.0e-5, epochs: 2}\n")
    cfg = _printed(capsys, "sft", recipe, "--lr", "4e-5", "sft.epochs=3", "model.device=cpu", "--print-config")
    assert cfg["command"] == "sft" and cfg["data"]["path"] == "train.jsonl"
    assert cfg["sft"]["lr"] == 4e-5 and cfg["sft"]["epochs"] == 3  # flag over recipe, override over both
    assert cfg["model"] == {**cfg["model"], "name": "smollm2-135m-instruct", "device": "cpu"}
    assert main(["sft", str(recipe), "sft.lrr=1"]) == 2
    assert "unknown config key 'sft.lrr'; did you mean 'sft.lr'?" in capsys.readouterr().err


def test_expert_iter_and_eval_print_their_configs(capsys):
    cfg = _printed(capsys, "expert-iter", "--task", "arithmetic", "--task-kwargs", "digits=2", "--out", "r",
                   "expert_iter.k=8", "--lr", "5e-5", "--print-config")
    assert cfg["task"]["kwargs"] == {"digits": 2} and cfg["expert_iter"]["k"] == 8
    assert cfg["expert_iter"]["sft"]["lr"] == 5e-5
    cfg = _printed(capsys, "eval", "smollm2-135m-instruct", "--task", "humaneval", "--n", "20", "--k", "1,10",
                   "temperature=0.8", "--print-config")
    assert (cfg["task"]["name"], cfg["n"], cfg["k"], cfg["temperature"]) == ("humaneval", 20, [1, 10], 0.8)


def test_eval_with_a_user_reward(tiny_dir, tmp_path, capsys, monkeypatch):
    (tmp_path / "mine.py").write_text("def score(response, answer):\n    return {'reward': 0.5, 'correct': True}\n")
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"question": f"q{i}", "answer": str(i)}) + "\n" for i in range(20)))
    monkeypatch.chdir(tmp_path)
    assert main(["eval", str(tiny_dir), "task.name=jsonl", f"--data={data}", "task.reward=mine.py:score",
                 "--max-new-tokens", "2", "--no-entropy", "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert report["metrics"]["pass@1"] == 1.0 and report["metrics"]["reward_mean"] == 0.5


def test_a_missing_required_key_is_named(capsys):
    assert main(["sft", "data.path=x.jsonl"]) == 2
    assert "run_dir is required (set run_dir=... on the command line or in the recipe)" in capsys.readouterr().err
