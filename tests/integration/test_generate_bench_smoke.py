"""Smoke test of benchmarks/generate.py on the tiny random model: the engine on the model and on a bfloat16
rollout copy beside it, with the floor of each, in one call."""

from __future__ import annotations


def test_a_bfloat16_copy_is_timed_beside_the_float32_engine_with_its_own_floor(tiny_dir, load_benchmark):
    bench = load_benchmark("generate")
    out = bench.main(["--model", str(tiny_dir), "--batch-sizes", "4", "--new-tokens", "5", "--repeats", "1",
                      "--threads", "1", "--only", "engine", "--dtypes", "float32", "bfloat16", "--floor"])
    summary = out["runs"][4]["summary"]
    runs = out["runs"][4]["repeats"]
    assert [len(runs["engine"]), len(runs["engine_bfloat16"]), len(runs["generate"])] == [1, 1, 0]
    assert runs["engine"][0]["tokens"] == runs["engine_bfloat16"][0]["tokens"] == 4 * 5
    assert summary["engine_bfloat16"] > 0 and summary["engine"] > 0
    for prefix in ("", "bfloat16_"):
        assert 0 < summary[f"{prefix}fraction_of_floor"]
        assert summary[f"{prefix}floor_decode_s"] == min(summary[f"{prefix}floor_plain_decode_s"],
                                                         summary[f"{prefix}floor_weight_major_decode_s"])
