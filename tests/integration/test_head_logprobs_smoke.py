"""Smoke test of benchmarks/head_logprobs.py on the tiny random model: both ways of running the output
projection's chunks are timed, and their gradients agree."""

from __future__ import annotations


def test_fused_and_checkpointed_chunks_are_timed_and_agree(tiny_dir, load_benchmark):
    out = load_benchmark("head_logprobs").main(["--model", str(tiny_dir), "--tokens", "300", "--repeats", "1",
                                                "--threads", "1"])
    assert set(out["summary"]) == {"checkpoint", "fused"}
    for s in out["summary"].values():
        assert s["total_s"] == s["forward_s"] + s["backward_s"] > 0
    assert out["max_grad"] > 1e-3 and out["max_grad_diff"] < 1e-4 * out["max_grad"]


def test_the_benchmark_leaves_the_size_budget_as_it_found_it(tiny_dir, load_benchmark):
    import rlvr.models.logprobs as logprobs

    before = logprobs._KEEP_LOGITS
    load_benchmark("head_logprobs").main(["--model", str(tiny_dir), "--tokens", "100", "--repeats", "1", "--threads", "1"])
    assert logprobs._KEEP_LOGITS == before > 0
