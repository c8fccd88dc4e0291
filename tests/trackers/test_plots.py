"""`rlvr plot` draws the panels a run logged: RL runs, SFT runs and expert-iteration runs."""

from __future__ import annotations

import json

import pytest

from rlvr.logging.jsonl import compress_jsonl
from rlvr.logging.plots import _panels, plot_run


def _run(tmp_path, rows):
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return sorted(p.name for p in plot_run(tmp_path))


def test_zero_one_rewards_draw_one_panel_for_reward_and_accuracy(tmp_path):
    rows = [{"step": s, "reward_mean": a, "accuracy": a, "entropy": 1.0, "loss": 0.1} for s, a in ((1, 0.2), (2, 0.5))]
    assert [t for t, _ in _panels(rows)] == ["reward = accuracy (0/1 rewards)", "entropy (nats/token)"]
    assert _run(tmp_path, rows) == ["entropy.png", "overview.png", "reward.png"]
    shaped = [{**r, "reward_mean": r["accuracy"] + 0.1} for r in rows]  # a format bonus: two panels
    assert [t for t, _ in _panels(shaped)][:2] == ["reward", "accuracy"]


def test_an_sft_run_draws_its_loss_and_held_out_accuracy(tmp_path):
    rows = [{"step": 0, "epoch": 0, "eval_accuracy_greedy": 0.1}, {"step": 1, "epoch": 1, "loss": 2.0},
            {"step": 2, "epoch": 1, "loss": 1.5}, {"step": 2, "epoch": 1, "eval_loss": 1.7, "eval_accuracy_greedy": 0.4}]
    assert dict(_panels(rows)) == {"held-out accuracy": ["eval_accuracy", "eval_accuracy_greedy"],
                                   "loss": ["loss", "sft_loss", "eval_loss"]}
    assert _run(tmp_path, rows) == ["held_out_accuracy.png", "loss.png", "overview.png"]


def test_an_expert_iteration_run_is_drawn_by_round(tmp_path):
    rows = [{"round": 0, "step": 0, "eval_accuracy": 0.2}, {"round": 1, "step": 5, "sample_accuracy": 0.3,
                                                           "sft_loss": 1.2, "eval_accuracy": 0.5}]
    assert [t for t, _ in _panels(rows)] == ["accuracy", "held-out accuracy", "loss"]
    assert "loss.png" in _run(tmp_path, rows)


def test_a_finished_study_run_is_drawn_from_its_gzipped_metrics(tmp_path):
    rows = [{"step": s, "reward_mean": r, "entropy": e} for s, r, e in ((1, 0.2, 1.0), (2, 0.6, 0.8))]
    plain = tmp_path / "metrics.jsonl"
    plain.write_text("".join(json.dumps(r) + "\n" for r in rows))
    compress_jsonl(plain)
    plain.unlink()
    assert sorted(p.name for p in plot_run(tmp_path)) == ["entropy.png", "overview.png", "reward.png"]


def test_a_directory_without_metrics_is_refused_with_the_usual_file_name(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"metrics\.jsonl not found: is .* a run directory"):
        plot_run(tmp_path)
