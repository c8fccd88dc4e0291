"""Smoke test of benchmarks/update_allocator.py on the tiny random model: every allocator regime runs in its
own process, and the ones that map freed blocks report their update beside the heap's."""

from __future__ import annotations


def test_each_regime_times_its_timed_updates_and_reports_its_peak(tiny_dir, load_benchmark):
    bench = load_benchmark("update_allocator")
    out = bench.main(["--model", str(tiny_dir), "--groups", "1", "--reps", "2", "--prompt-tokens", "14",
                      "--response-tokens", "8", "--threads", "1", "--mapped-from", "1024"])
    assert set(out["regimes"]) == {"heap", "release", "release+huge", "heap+huge", "mapped>=1024KiB"}
    assert all(len(rows) == 1 for rows in out["timed"].values())  # the warm-up update is not timed
    for s in out["regimes"].values():
        assert s["update_s"] == s["forward_s"] + s["backward_s"] > 0
        assert s["peak_mib"] > 0
    assert 8 * 2 <= out["response_tokens"] <= 8 * 8  # responses of T/4 .. T tokens


def test_a_preloaded_allocator_that_is_not_there_is_named_with_its_install(load_benchmark):
    import pytest

    bench = load_benchmark("update_allocator")
    with pytest.raises(SystemExit, match="no file /nonexistent/libjemalloc.so.2 .*apt-get install libjemalloc2"):
        bench.main(["--preload", "/nonexistent/libjemalloc.so.2=dirty_decay_ms:1000"])
    name, (mapped_from, huge, env) = bench.preload_regime(__file__ + "=narenas:1")
    assert (mapped_from, huge) == (0, False) and env == {"LD_PRELOAD": __file__, "MALLOC_CONF": "narenas:1"}
    assert name.endswith("[narenas:1]")


def test_each_regime_runs_once_per_bucket_count(tiny_dir, load_benchmark):
    bench = load_benchmark("update_allocator")
    out = bench.main(["--model", str(tiny_dir), "--groups", "1", "--reps", "2", "--prompt-tokens", "14",
                      "--response-tokens", "8", "--threads", "1", "--only", "release", "--buckets", "1", "4"])
    assert set(out["regimes"]) == {"release b1", "release b4"}
    assert all(s["update_s"] > 0 for s in out["regimes"].values())
