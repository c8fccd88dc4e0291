"""Evaluation metrics against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from rlvr.eval.metrics import Z_95, maj_at_n, majority_vote, mean_ci, pass_at_k, rate_metrics, summarize, wilson_interval


def test_pass_at_k_hand_values():
    # n=5, c=2: pass@1 = c/n; pass@2 = 1 - C(3,2)/C(5,2) = 1 - 3/10; pass@4 = 1 - 0/5 (n-c < k).
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4, abs=1e-12)
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7, abs=1e-12)
    assert pass_at_k(5, 2, 3) == pytest.approx(1 - 1 / 10, abs=1e-12)  # C(3,3)/C(5,3) = 1/10
    assert pass_at_k(5, 2, 4) == pytest.approx(1.0, abs=1e-12)
    assert pass_at_k(8, 0, 8) == 0.0
    assert pass_at_k(8, 8, 1) == pytest.approx(1.0, abs=1e-12)


def test_pass_at_k_matches_subset_enumeration():
    # pass@k is the fraction of k-subsets of the n samples that contain a correct one.
    from itertools import combinations

    outcomes = [1, 0, 0, 1, 0, 0]
    n, c = len(outcomes), sum(outcomes)
    for k in range(1, n + 1):
        subsets = list(combinations(outcomes, k))
        expected = sum(any(s) for s in subsets) / len(subsets)
        assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("n, c, k, match", [(4, 1, 5, "1 <= k <= n"), (4, 1, 0, "1 <= k <= n"), (4, 5, 1, "0 <= c <= n")])
def test_pass_at_k_rejects_bad_counts(n, c, k, match):
    with pytest.raises(ValueError, match=match):
        pass_at_k(n, c, k)


def test_majority_vote_counts_and_ties():
    assert majority_vote(["4", "3", "4", "5"]) == ("4", 0)
    # "3" and "4" tie on two votes each: the one sampled first wins.
    assert majority_vote(["3", "4", "4", "3"]) == ("3", 0)
    assert majority_vote(["4", "3", "3", "4"]) == ("4", 0)
    assert majority_vote([None, None, "7", "8", "8"]) == ("8", 3)
    # None never wins, even when it is the most frequent.
    assert majority_vote([None, None, "2"]) == ("2", 2)
    assert majority_vote([None, None]) == (None, -1)
    assert majority_vote([]) == (None, -1)


def test_maj_at_n():
    answers = ["3", "4", "4", "3"]
    assert maj_at_n(answers, [False, True, True, False]) == 0.0  # tie goes to "3", which is wrong
    assert maj_at_n(answers, [True, False, False, True]) == 1.0
    assert maj_at_n(["4", "4", "5"], [True, True, False]) == 1.0
    assert maj_at_n(["4", "4", "5"], [False, False, True]) == 0.0  # the one right answer is outvoted
    # The voted answer is correct when any sample giving it was judged correct.
    assert maj_at_n(["4", "4", "5"], [False, True, False]) == 1.0
    assert maj_at_n([None, None, None], [False, False, False]) == 0.0
    with pytest.raises(ValueError, match="one verdict per answer"):
        maj_at_n(["1", "2"], [True])


def test_mean_ci_hand_example():
    # values 1,0,1,1: mean 0.75; s^2 = (3 * 0.25^2 + 0.75^2) / 3 = 0.25; se = 0.5 / sqrt(4) = 0.25.
    mean, low, high = mean_ci([1.0, 0.0, 1.0, 1.0])
    half = 1.959963984540054 * 0.25
    assert mean == 0.75
    assert low == pytest.approx(0.75 - half, abs=1e-12)
    assert high == pytest.approx(0.75 + half, abs=1e-12)
    assert Z_95 == pytest.approx(1.959963984540054, abs=1e-15)


def test_mean_ci_edge_cases():
    mean, low, high = mean_ci([0.3])
    assert mean == 0.3 and math.isnan(low) and math.isnan(high)
    assert all(math.isnan(v) for v in mean_ci([]))
    # NaN (metric undefined for that problem) is left out, not counted as zero.
    assert mean_ci([1.0, math.nan, 0.0]) == mean_ci([1.0, 0.0])
    # Identical values: a zero-width interval.
    assert mean_ci([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)


def test_summarize_adds_bounds():
    metrics = summarize({"pass@1": [1.0, 0.0], "entropy": [2.0]})
    assert list(metrics) == ["pass@1", "pass@1_ci_low", "pass@1_ci_high", "entropy", "entropy_ci_low", "entropy_ci_high"]
    assert metrics["pass@1"] == 0.5
    # s = sqrt(0.5), se = s / sqrt(2) = 0.5
    assert metrics["pass@1_ci_high"] == pytest.approx(0.5 + Z_95 * 0.5, abs=1e-12)
    assert metrics["entropy"] == 2.0 and math.isnan(metrics["entropy_ci_low"])


def test_rates_get_a_wilson_interval_that_stays_honest_at_the_boundaries():
    """Guards a bug: 0 correct of 6 was reported as [0, 0] (normal approximation)."""
    m = summarize({"pass@1": [0.0] * 6}, rates=["pass@1"])
    assert m["pass@1"] == 0.0 and m["pass@1_ci_low"] == 0.0
    assert m["pass@1_ci_high"] == pytest.approx(0.3903, abs=1e-4)  # the textbook Wilson bound for 0/6
    m = summarize({"pass@1": [1.0] * 6}, rates=["pass@1"])
    assert m["pass@1_ci_low"] == pytest.approx(1 - 0.3903, abs=1e-4) and m["pass@1_ci_high"] == 1.0
    # 3 of 10: Wilson (0.108, 0.603)
    low, high = wilson_interval(0.3, 10)
    assert (round(low, 3), round(high, 3)) == (0.108, 0.603)
    # a rate that is not named as such keeps the normal approximation
    raw = summarize({"x": [1.0, 1.0, 0.0]})
    assert raw["x_ci_high"] == pytest.approx(2 / 3 + Z_95 / 3, abs=1e-12)


def test_intervals_count_distinct_problems_once():
    """Guards a bug: a problem repeated 10 times is one problem, not ten."""
    values = [1.0] * 10 + [0.0] * 10  # two distinct problems, each repeated ten times
    clusters = ["a"] * 10 + ["b"] * 10
    flat = summarize({"mean@1": values}, rates=["mean@1"])
    clustered = summarize({"mean@1": values}, rates=["mean@1"], clusters=clusters)
    assert flat["mean@1"] == clustered["mean@1"] == 0.5
    assert (clustered["mean@1_ci_low"], clustered["mean@1_ci_high"]) == pytest.approx(wilson_interval(0.5, 2))
    assert clustered["mean@1_ci_high"] - clustered["mean@1_ci_low"] > 2 * (flat["mean@1_ci_high"] - flat["mean@1_ci_low"])
    lengths = summarize({"len": [2.0] * 10 + [4.0] * 10}, clusters=clusters)
    assert lengths["len"] == 3.0
    assert lengths["len_ci_high"] == pytest.approx(3.0 + Z_95 * 1.0, abs=1e-12)  # two cluster means, se = 1


def test_rate_metrics():
    names = ["pass@1", "pass@8", "mean@8", "maj@8", "reward_mean", "format_rate", "response_len_mean", "truncated_frac", "entropy"]
    assert rate_metrics(names) == ["pass@1", "pass@8", "mean@8", "maj@8", "format_rate", "truncated_frac"]
