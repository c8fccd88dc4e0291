"""Smoke test of benchmarks/decode_variants.py on the tiny random model: every layout of the decode step is
timed in each dtype, and the default of each dtype is among them."""

from __future__ import annotations


def test_each_layout_is_timed_and_the_default_is_named(tiny_dir, load_benchmark):
    bench = load_benchmark("decode_variants")
    out = bench.main(["--model", str(tiny_dir), "--shapes", "4x6", "--dtypes", "float32", "bfloat16",
                      "--repeats", "1", "--threads", "1"])
    assert [r["dtype"] for r in out["results"]] == ["float32", "bfloat16"]
    for row in out["results"]:
        assert row["rows"] == 4 and row["tokens"] == 6
        layouts = [(v["weight_major"], v["decode_attention"]) for v in row["variants"]]
        assert sorted(layouts) == [(False, "matmul"), (False, "sdpa"), (True, "matmul"), (True, "sdpa")]
        assert (row["default"]["weight_major"], row["default"]["decode_attention"]) in layouts
        assert all(len(v["decode_s"]) == 1 and v["median_decode_s"] > 0 for v in row["variants"])
    from rlvr.rollout.decoders import cpu_flags

    amx = "amx_bf16" in cpu_flags()
    assert out["results"][0]["default"] == {"weight_major": not amx, "decode_attention": "matmul"}  # float32, CPU
    assert out["results"][1]["default"] == {"weight_major": amx, "decode_attention": "sdpa"}


def test_single_products_are_timed_in_both_layouts(tiny_dir, load_benchmark):
    bench = load_benchmark("decode_variants")
    out = bench.main(["--model", str(tiny_dir), "--ops", "--dtypes", "float32", "--reps", "1", "--threads", "1"])
    ops = out["ops"]
    attention = [o for o in ops if o["op"].startswith("attention")]
    products = [o for o in ops if not o["op"].startswith("attention")]
    assert len(attention) == 2 * 3 and len(products) == 2 * 5  # 8 and 64 rows; 3 cache lengths, 5 projections
    assert all(o["matmuls_us"] > 0 and o["fused_us"] > 0 for o in attention)
    assert all(o["x_wt_us"] > 0 and o["weight_major_us"] > 0 for o in products)
