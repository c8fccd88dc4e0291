"""`evaluate` on scripted responses: every metric checked against values worked out by hand."""

from __future__ import annotations

import json
import math

import pytest

from rlvr.eval import evaluate
from rlvr.eval.metrics import Z_95
from rlvr.models.tiny import make_tiny_model
from tests.eval.fakes import EchoTask, Example, ScriptedEngine

EXAMPLES = [Example("p0", "2+2?", "4"), Example("p1", "3+4?", "7")]
# p0: correct 2/4 ("A 4", "4"), majority "4" (right), format 2/4, lengths 3,3,1,1, truncated 2/4.
# p1: correct 1/4 ("7"), majority "3" (wrong), format 2/4, lengths 3,3,1,2, truncated 2/4.
SCRIPTS = [["A 4", "A 5", "4", "x"], ["A 3", "A 3", "7", "88"]]


@pytest.fixture(scope="module")
def tiny():
    return make_tiny_model(seed=0)


def run_scripted(tiny, task=None, **kwargs):
    model, tokenizer = tiny
    engine = ScriptedEngine(tokenizer, SCRIPTS)
    settings = dict(n=4, k=(1, 2, 4), temperature=1.0, engine=engine, with_entropy=False, seed=5)
    settings.update(kwargs)
    result = evaluate(model, tokenizer, task or EchoTask(), EXAMPLES, **settings)
    return result, engine


def test_metrics_match_hand_values(tiny):
    result, _ = run_scripted(tiny)
    m = result.metrics
    # pass@1 = mean of c/n = (2/4 + 1/4) / 2
    assert m["pass@1"] == pytest.approx(0.375, abs=1e-12)
    # pass@2: p0 1 - C(2,2)/C(4,2) = 5/6; p1 1 - C(3,2)/C(4,2) = 1/2
    assert m["pass@2"] == pytest.approx((5 / 6 + 1 / 2) / 2, abs=1e-12)
    # pass@4: both problems have a correct sample
    assert m["pass@4"] == pytest.approx(1.0, abs=1e-12)
    assert m["mean@4"] == pytest.approx(0.375, abs=1e-12)
    assert m["maj@4"] == 0.5
    assert m["format_rate"] == 0.5
    assert m["response_len_mean"] == pytest.approx((2.0 + 2.25) / 2, abs=1e-12)
    assert m["truncated_frac"] == 0.5
    # reward = correct + 0.1 * format: p0 (1.1 + 0.1 + 1 + 0) / 4, p1 (0.1 + 0.1 + 1 + 0) / 4
    assert m["reward_mean"] == pytest.approx((2.2 / 4 + 1.2 / 4) / 2, abs=1e-12)
    assert "entropy" not in m
    # reward_mean per problem is [0.55, 0.3]: s = sqrt(2 * 0.125^2 / 1), se = s / sqrt(2) = 0.125
    assert m["reward_mean_ci_low"] == pytest.approx(0.425 - Z_95 * 0.125, abs=1e-12)
    assert m["reward_mean_ci_high"] == pytest.approx(0.425 + Z_95 * 0.125, abs=1e-12)
    # maj@4 per problem is [1, 0]: the Wilson interval of 1 in 2, (0.5 -+ z sqrt(1/8 + z^2/16)) / (1 + z^2/2)
    z2 = Z_95**2
    half = Z_95 * math.sqrt(0.125 + z2 / 16) / (1 + z2 / 2)
    assert m["maj@4_ci_low"] == pytest.approx(0.5 - half, abs=1e-12)
    assert m["maj@4_ci_high"] == pytest.approx(0.5 + half, abs=1e-12)
    # the length is not a rate: its interval is not clipped (per problem [2, 2.25], se = 0.125)
    assert m["response_len_mean_ci_low"] == pytest.approx(2.125 - Z_95 * 0.125, abs=1e-12)
    # pass@4 is 1 on both problems: the interval stays honest, 2 of 2 is [0.342, 1], not [1, 1]
    assert m["pass@4_ci_high"] == 1.0
    assert m["pass@4_ci_low"] == pytest.approx((1 + z2 / 4 - Z_95 * math.sqrt(z2 / 16)) / (1 + z2 / 2), abs=1e-12)
    assert 0.34 < m["pass@4_ci_low"] < 0.35
    assert result.headline() == [
        "pass@1", "pass@2", "pass@4", "mean@4", "maj@4", "reward_mean", "format_rate", "response_len_mean", "truncated_frac",
    ]


def test_samples_are_problem_major(tiny):
    result, _ = run_scripted(tiny)
    assert len(result.samples) == 8
    assert [s["problem_id"] for s in result.samples] == ["p0"] * 4 + ["p1"] * 4
    assert [s["sample_index"] for s in result.samples] == [0, 1, 2, 3] * 2
    first = result.samples[0]
    assert first["response"] == "A 4" and first["extracted_answer"] == "4" and first["correct"] is True
    assert first["question"] == "2+2?" and first["answer"] == "4"
    assert first["length"] == 3 and first["finish_reason"] == "length"
    assert first["components"] == {"answer": 1.0, "format": 1.0}
    assert first["reward"] == pytest.approx(1.1, abs=1e-12)
    assert first["entropy"] is None
    assert result.samples[7]["response"] == "88" and result.samples[7]["finish_reason"] == "stop"


def test_prompts_batches_and_seeds(tiny):
    model, tokenizer = tiny
    # batch_size 4 with n=4: one prompt per engine call, each call with its own seed.
    result, engine = run_scripted(tiny, batch_size=4)
    assert len(engine.calls) == 2
    assert [params.seed for _, params in engine.calls] == [5, 6]
    assert all(params.n == 4 and params.temperature == 1.0 for _, params in engine.calls)
    expected = tokenizer.encode("<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)
    assert engine.calls[0][0] == [expected]
    # The default batch fits both prompts in one call, and the metrics do not change.
    result_one_call, engine_one = run_scripted(tiny)
    assert len(engine_one.calls) == 1 and len(engine_one.calls[0][0]) == 2
    assert result_one_call.metrics == result.metrics


def test_optional_metrics_are_omitted(tiny):
    result, _ = run_scripted(tiny, task=EchoTask(with_format=False, with_extractor=False))
    assert "format_rate" not in result.metrics and "maj@4" not in result.metrics
    assert all(s["extracted_answer"] is None for s in result.samples)


def test_json_outputs(tiny):
    result, _ = run_scripted(tiny, k=(1,))
    data = json.loads(result.to_json())
    assert data["metrics"]["pass@1"] == pytest.approx(0.375, abs=1e-12)
    assert data["settings"]["n"] == 4 and data["settings"]["k"] == [1] and data["settings"]["task"] == "echo"
    assert data["settings"]["num_problems"] == 2
    lines = result.samples_jsonl().splitlines()
    assert len(lines) == 8 and json.loads(lines[7])["response"] == "88"


def test_nan_becomes_null_in_json(tiny):
    model, tokenizer = tiny
    engine = ScriptedEngine(tokenizer, [["A 4"]])
    result = evaluate(model, tokenizer, EchoTask(), EXAMPLES[:1], n=1, engine=engine, with_entropy=False)
    assert math.isnan(result.metrics["reward_mean_ci_low"])  # one problem: no normal interval
    assert json.loads(result.to_json())["metrics"]["reward_mean_ci_low"] is None
    assert not math.isnan(result.metrics["pass@1_ci_low"])  # a rate's Wilson interval exists for one problem


def test_table_prints(tiny):
    from rich.console import Console

    result, _ = run_scripted(tiny)
    console = Console(record=True, width=120)
    result.print_table(console)
    text = console.export_text()
    assert "maj@4" in text and "0.5000" in text and "[" in text


def test_score_errors_name_the_problem(tiny):
    class Broken(EchoTask):
        def score(self, response, example):
            if example.id == "p1":
                raise ZeroDivisionError("boom")
            return super().score(response, example)

    with pytest.raises(RuntimeError, match=r"problem 'p1' \(sample 0\).*ZeroDivisionError: boom"):
        run_scripted(tiny, task=Broken())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n=4, temperature=0.0), "greedy decoding .* use n=1"),
        (dict(n=4, k=(1, 8)), r"1 <= k <= n; got k=\[8\] with n=4"),
        (dict(n=0), "n must be a positive integer"),
        (dict(n=4, k=()), "k is empty"),
        (dict(n=4, temperature=-1.0), "temperature must be >= 0"),
        (dict(n=4, top_p=0.0), "top_p must be in"),
    ],
)
def test_bad_settings_are_rejected(tiny, kwargs, match):
    with pytest.raises(ValueError, match=match):
        run_scripted(tiny, **kwargs)


def test_no_examples_rejected(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="no problems to evaluate"):
        evaluate(model, tokenizer, EchoTask(), [], engine=ScriptedEngine(tokenizer, []))
