"""Smoke test of benchmarks/attention_buckets.py on small shapes: both layouts are timed on the same rows."""

from __future__ import annotations


def test_both_layouts_are_timed_and_the_buckets_pad_less(load_benchmark):
    bench = load_benchmark("attention_buckets")
    out = bench.main(["--rows", "12", "--response-tokens", "24", "--keys-before", "8", "--heads", "2",
                      "--kv-heads", "1", "--head-dim", "8", "--reps", "2", "--threads", "1"])
    [row] = out["results"]
    assert row["one_block_s"] > 0 and row["buckets_s"] > 0
    assert 1 < len(row["buckets"]) <= 4 and sum(n for n, _ in row["buckets"]) == 12
    assert row["area_ratio"] < 1  # lengths of 5..23 tokens: buckets pad less than one block
