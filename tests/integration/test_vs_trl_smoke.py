"""Smoke test of benchmarks/vs_trl.py on a tiny random model: both sides run, on the same prompts.

Skipped when TRL (the benchmark-only extra `bench-trl`) is not installed. The two sides run in this
process (the benchmark itself runs each in a subprocess) so that the test stays fast.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("datasets")
pytest.importorskip("psutil")

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "vs_trl.py"


@pytest.fixture(scope="module")
def vs_trl():
    spec = importlib.util.spec_from_file_location("vs_trl", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def both_sides(vs_trl, tmp_path_factory):
    from rlvr.models import make_tiny_model_dir

    model_dir = make_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")
    args = argparse.Namespace(steps=2, seed=3, threads=1, model=str(model_dir), max_new_tokens=6,
                              checkpoint_activations=False)
    return args, [vs_trl.run_rlvr(args), vs_trl.run_trl(args)]


def test_floor_is_two_flops_per_sampled_token_and_six_per_trained_token(vs_trl):
    # (2 * 10 * 3 + 6 * 10 * 5) / (1 GFLOP/s) = 360 FLOP / 1e9 FLOP/s
    assert vs_trl.floor_s(10, 3, 5, gflops=1.0) == pytest.approx(3.6e-7, rel=1e-12)
    assert vs_trl.floor_s(10, 0, 0) == 0.0


def test_both_sides_do_the_same_work(both_sides):
    args, (rlvr, trl) = both_sides
    assert [rlvr["side"], trl["side"]] == ["rlvr", "trl"]
    assert rlvr["params"] == trl["params"]
    assert rlvr["prompt_ids_match"] and trl["prompt_ids_match"]
    batch = 4 * 4
    for r, t in zip(rlvr["steps"], trl["steps"], strict=True):
        # Same prompts in the same order: the prompt tokens of each step are equal on both sides.
        assert r["prompt_tokens"] == t["prompt_tokens"] > 0
        for s in (r, t):
            assert batch <= s["gen_tokens"] <= batch * args.max_new_tokens
            assert s["train_tokens"] == s["gen_tokens"] + s["prompt_tokens"] <= s["train_tokens_padded"]
            assert 0.0 <= s["reward_mean"] <= 1.0
            assert 0.0 < s["gen_s"] < s["step_s"]
    assert len(rlvr["steps"]) == len(trl["steps"]) == args.steps


def test_summary_ratios_and_peak_memory(vs_trl, both_sides):
    _, runs = both_sides
    s = vs_trl.summarise(runs, gflops=165.0)
    for side in ("rlvr", "trl"):
        assert s[side]["timed_steps"] == 1  # the warm-up step is dropped
        assert s[side]["peak_rss_mib"] >= s[side]["rss_loaded_mib"] > 0
        timed = runs[0 if side == "rlvr" else 1]["steps"][1]
        assert s[side]["median_step_s"] == timed["step_s"]
        floor = vs_trl.floor_s(s[side]["params"], timed["gen_tokens"], timed["train_tokens"])
        assert s[side]["median_ratio_to_floor"] == pytest.approx(timed["step_s"] / floor, rel=1e-12)
    assert s["ratio_step_time"] == pytest.approx(s["rlvr"]["median_step_s"] / s["trl"]["median_step_s"], rel=1e-12)
    assert s["ratio_peak_rss"] == pytest.approx(s["rlvr"]["peak_rss_mib"] / s["trl"]["peak_rss_mib"], rel=1e-12)


def test_gsm8k_workload_same_prompts_on_both_sides(vs_trl, tmp_path):
    """The GSM8K-shaped workload reads the training questions beside the checkout; both sides see the same
    prompt token ids (the child's own check) and the sizes given on the command line."""
    from rlvr.models import make_tiny_model_dir

    if not vs_trl.GSM8K.is_dir():
        pytest.skip(f"no GSM8K copy at {vs_trl.GSM8K}")
    model_dir = make_tiny_model_dir(tmp_path / "model")
    args = argparse.Namespace(steps=2, seed=0, threads=1, model=str(model_dir), workload="gsm8k", prompts=2,
                              samples=2, max_new_tokens=4, rollout_dtype=None, checkpoint_activations=False)
    assert vs_trl.work(args) == {"task": "gsm8k", "task_kwargs": {"path": str(vs_trl.GSM8K)}, "prompts": 2,
                                 "samples": 2, "max_new_tokens": 4, "rollout_dtype": "float32",
                                 "checkpoint_activations": False, "micro_batch_size": None, "ignore_eos": False}
    defaults = vs_trl.work(argparse.Namespace(workload="gsm8k"))
    assert (defaults["prompts"], defaults["samples"], defaults["max_new_tokens"]) == (8, 8, 256)
    rlvr, trl = vs_trl.run_rlvr(args), vs_trl.run_trl(args)
    assert rlvr["prompt_ids_match"] and trl["prompt_ids_match"]
    for r, t in zip(rlvr["steps"], trl["steps"], strict=True):
        assert r["prompt_tokens"] == t["prompt_tokens"] > 2 * 40  # GSM8K questions are long
        assert 4 <= r["gen_tokens"] <= 2 * 2 * 4 and 4 <= t["gen_tokens"] <= 2 * 2 * 4


def test_sweep_figure_is_written(vs_trl, tmp_path):
    rows = [{"value": v, "summary": {side: {"median_step_s": v * k, "peak_rss_mib": 1000 + v} for side, k in
                                     (("rlvr", 0.1), ("trl", 0.3))}} for v in (64, 128)]
    vs_trl.plot_sweep(rows, "max_new_tokens", str(tmp_path / "sweep.png"))
    assert (tmp_path / "sweep.png").stat().st_size > 1000


def test_sweep_growth_as_multiples_and_as_added_seconds(vs_trl):
    rows = [{"value": v, "summary": {"rlvr": {"median_step_s": 1 + 0.1 * v, "peak_rss_mib": 1000 + v},
                                     "trl": {"median_step_s": 10 + 0.2 * v, "peak_rss_mib": 2000 + 2 * v}}}
            for v in (64, 128, 512)]
    vs_trl.growth(rows)
    assert rows[0]["added_s_per_unit"] is None and rows[0]["growth"] == {"rlvr": 1.0, "trl": 1.0}
    # rlvr: 7.4 -> 52.2 s (7.05x) but 0.1 s per added token; TRL: 22.8 -> 112.4 s (4.93x) at 0.2 s per token
    assert rows[2]["growth"]["rlvr"] == pytest.approx(52.2 / 7.4) and rows[2]["growth"]["trl"] == pytest.approx(112.4 / 22.8)
    assert rows[2]["added_s_per_unit"] == pytest.approx({"rlvr": 0.1, "trl": 0.2})
    assert rows[1]["memory_growth"] == pytest.approx({"rlvr": 1128 / 1064, "trl": 2256 / 2128})


def test_micro_batches_and_checkpointing_on_both_sides(vs_trl, tmp_path):
    """--micro-batch-size and --checkpoint-activations: both sides still make one generation and one optimizer
    step per step, on the same prompts."""
    from rlvr.models import make_tiny_model_dir

    model_dir = make_tiny_model_dir(tmp_path / "model")
    args = argparse.Namespace(steps=2, seed=1, threads=1, model=str(model_dir), max_new_tokens=5,
                              checkpoint_activations=True, micro_batch_size=8)
    rlvr, trl = vs_trl.run_rlvr(args), vs_trl.run_trl(args)
    assert rlvr["prompt_ids_match"] and trl["prompt_ids_match"]
    assert len(rlvr["steps"]) == len(trl["steps"]) == 2
    for r, t in zip(rlvr["steps"], trl["steps"], strict=True):
        assert r["prompt_tokens"] == t["prompt_tokens"] > 0  # the whole batch of 16 each step on both sides
    with pytest.raises(SystemExit, match="multiple of the group size"):
        vs_trl.work(argparse.Namespace(micro_batch_size=2))


def test_ignore_eos_makes_both_sides_generate_every_token(vs_trl, tmp_path):
    """--ignore-eos: every response on both sides runs to max_new_tokens (rlvr's ignore_eos, TRL's min_new_tokens),
    so the two generate and train the same number of tokens."""
    from rlvr.models import make_tiny_model_dir

    model_dir = make_tiny_model_dir(tmp_path / "model")
    args = argparse.Namespace(steps=2, seed=2, threads=1, model=str(model_dir), max_new_tokens=7,
                              checkpoint_activations=False, ignore_eos=True)
    assert vs_trl.work(args)["ignore_eos"]
    rlvr, trl = vs_trl.run_rlvr(args), vs_trl.run_trl(args)
    for r, t in zip(rlvr["steps"], trl["steps"], strict=True):
        assert r["gen_tokens"] == t["gen_tokens"] == 4 * 4 * 7
        assert r["train_tokens"] == t["train_tokens"]


def test_profile_reports_each_phases_time_and_peak_memory(vs_trl, tmp_path, monkeypatch):
    import torch

    from rlvr.models import make_tiny_model_dir
    from rlvr.train import optimize, passes, prepare

    # the profile wraps these from outside; put the originals back after the test
    for owner, name in ((torch.Tensor, "backward"), (torch.nn.utils, "clip_grad_norm_"),
                        (passes, "response_logprobs"), (optimize, "response_logprobs"),
                        (prepare, "compute_advantages"), (optimize, "rl_objective")):
        monkeypatch.setattr(owner, name, getattr(owner, name))
    model_dir = make_tiny_model_dir(tmp_path / "model")
    args = argparse.Namespace(steps=2, seed=0, threads=1, model=str(model_dir), max_new_tokens=4,
                              checkpoint_activations=False, phases_only=True, json=None)
    report = vs_trl.profile_rlvr(args)
    assert "op_table" not in report and len(report["rows"]) == 1
    row = report["rows"][0]
    peaks = row["peak_rss_mib"]
    for phase in ("generation", "forward (log-probs)", "backward", "optimizer step", "step"):
        assert row["phases"][phase][0] > 0
        assert 0 < peaks[phase] <= peaks["step"]  # the whole step's peak covers each phase's
    assert peaks["step"] <= vs_trl._peak_rss_mib() + 1
