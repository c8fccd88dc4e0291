"""A finished study run keeps its metrics as metrics.jsonl.gz; every reader of a run's metrics reads it."""

from __future__ import annotations

import gzip
import json
import time

import pytest

from rlvr.compare.report import _fmt, _interval, summarize_study
from rlvr.compare.study import DONE, Study, Variant, _finish_run
from rlvr.logging.jsonl import compress_jsonl, jsonl_path, read_jsonl

ROWS = [{"step": 1, "reward_mean": 0.25, "eval_accuracy": None}, {"step": 2, "reward_mean": 0.5, "eval_accuracy": 0.75}]


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_gzipped_rows_read_back_the_same_and_the_bytes_depend_on_the_content_only(tmp_path):
    plain = _write(tmp_path / "metrics.jsonl", ROWS)
    gz = compress_jsonl(plain)
    assert gz.name == "metrics.jsonl.gz" and plain.exists()  # the caller removes the plain file
    assert read_jsonl(gz) == read_jsonl(plain) == ROWS
    first = gz.read_bytes()
    assert first[3] == 0 and first[4:8] == b"\0\0\0\0"  # no file name, no time stamp in the header
    time.sleep(1.1)
    assert compress_jsonl(plain).read_bytes() == first  # rewriting a tracked copy leaves it unchanged


def test_a_bad_gzipped_line_is_named_by_file_and_line(tmp_path):
    gz = tmp_path / "metrics.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"step": 1}\n{"step": \n'))
    with pytest.raises(ValueError, match=r"metrics\.jsonl\.gz:2: not valid JSON"):
        read_jsonl(gz)


def test_jsonl_path_prefers_the_plain_file_and_names_it_when_neither_exists(tmp_path):
    plain = tmp_path / "metrics.jsonl"
    assert jsonl_path(plain) == plain  # neither: the usual name, for the "not found" message
    compress_jsonl(_write(plain, ROWS))
    assert jsonl_path(plain) == plain  # both (a run that is being written again): the live one
    plain.unlink()
    assert jsonl_path(plain) == tmp_path / "metrics.jsonl.gz"


def test_a_finished_run_keeps_gzipped_metrics_and_its_done_marker(tmp_path):
    run = tmp_path / "grpo" / "seed0"
    _write(run / "metrics.jsonl", ROWS)
    _finish_run(run)
    assert sorted(p.name for p in run.iterdir()) == [DONE, "metrics.jsonl.gz"]
    assert read_jsonl(run / "metrics.jsonl.gz") == ROWS
    bare = tmp_path / "failed" / "seed0"  # a command that exited 0 without logging: marked done, nothing made
    bare.mkdir(parents=True)
    _finish_run(bare)
    assert [p.name for p in bare.iterdir()] == [DONE]


def test_the_report_reads_gzipped_and_plain_runs_alike(tmp_path):
    """Final reward a: 0.5 and 0.7 over seeds 0 and 1 (mean 0.6); b: 0.2 and 0.6, so b - a = -0.3 and -0.1,
    mean -0.2, with seed 1 of b gzipped and the rest plain."""
    study = Study(name="s", base="default", variants=[Variant("a"), Variant("b")], seeds=[0, 1],
                  metrics=["reward_mean"], out=tmp_path)
    finals = {("a", 0): 0.5, ("a", 1): 0.7, ("b", 0): 0.2, ("b", 1): 0.6}
    for (label, seed), final in finals.items():
        _write(tmp_path / label / f"seed{seed}" / "metrics.jsonl", [{"step": 1, "reward_mean": 0.0},
                                                                      {"step": 2, "reward_mean": final}])
    plain = summarize_study(study)
    _finish_run(tmp_path / "b" / "seed1")
    summary = summarize_study(study)
    assert summary == plain
    assert summary["final"]["reward_mean"]["a"]["mean"] == pytest.approx(0.6, abs=1e-12)
    assert summary["final"]["reward_mean"]["b"]["per_seed"] == {"0": 0.2, "1": 0.6}
    assert summary["paired"]["reward_mean"]["b"]["mean"] == pytest.approx(-0.2, abs=1e-12)


def test_a_zero_that_float_rounding_leaves_prints_as_zero():
    """The paired difference of bupo-norm's greedy accuracy against grpo's: per seed +0.05, +0.10, -0.15
    (each a float difference of two accuracies), whose mean is 0 but computes to 3.7e-17."""
    assert _fmt(3.700743415417188e-17) == "0.000" and _fmt(-1e-13) == "0.000"
    assert _fmt(0.0) == "0.000" and _fmt(0.5) == "0.500"
    assert _fmt(-0.00204) == "-0.00204" and _fmt(1.09e-4) == "0.000109"  # small values keep 3 digits
    assert _interval({"mean": 3.7e-17, "low": -0.3286, "high": 0.3286, "n": 3}) == "0.000 [-0.329, 0.329]"
