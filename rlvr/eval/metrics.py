"""Per-problem evaluation metrics and their confidence intervals.

Every metric is first computed for each problem from that problem's n samples, then averaged over
problems, so each problem weighs the same whatever its response lengths. 95% confidence intervals
are over *distinct* problems (an evaluation set that repeats a problem ten times has one problem's
worth of evidence about it, not ten; see `summarize`):

- rates in [0, 1] (pass@k, mean@n, maj@n, format and truncation rates): the Wilson score interval
  (`wilson_interval`) with the number of distinct problems as n. It stays inside [0, 1] and is honest at
  the boundaries (0 correct of 6 gives [0, 0.39], not [0, 0]). For 0/1 per-problem outcomes (greedy
  pass@1, mean@1) it is the Wilson interval itself; for fractional per-problem rates (pass@k from n
  samples) it is conservative, since a variable in [0, 1] with mean mu has variance at most mu(1 - mu).
  A percentile bootstrap over problems, the other usual choice for pass@k, collapses to [0, 0] too
  when no problem is ever solved.
- other metrics (reward, length, entropy): a normal approximation over distinct problems (`mean_ci`).

Plain Python floats: these run once per evaluation, on a few thousand numbers, outside any graph.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Sequence

from rlvr.core.passk import pass_at_k as _pass_at_k

# Two-sided 95% quantile of the standard normal, Phi^{-1}(0.975).
Z_95 = 1.959963984540054


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with `c` correct out of `n` samples: 1 - C(n-c, k) / C(n, k).

    Chen et al. 2021, "Evaluating Large Language Models Trained on Code", eq. 1. Needs 1 <= k <= n.
    """
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n; got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs 1 <= k <= n; got n={n}: sample at least k responses per problem")
    return float(_pass_at_k(n, c, k))


def majority_vote(answers: Sequence[Hashable | None]) -> tuple[Hashable | None, int]:
    """The most frequent answer among `answers` and the index of its first occurrence.

    `None` (no answer could be extracted) never wins a vote; if every answer is `None` the result is
    `(None, -1)`. Ties go to the answer that appears first in sample order, which is fixed by the
    sampling seed, so the vote is deterministic.

    >>> majority_vote(["3", "4", "4", "3", None])
    ('3', 0)
    >>> majority_vote([None, "7"])
    ('7', 1)
    """
    counts: dict[Hashable, int] = {}
    first: dict[Hashable, int] = {}
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        counts[answer] = counts.get(answer, 0) + 1
        first.setdefault(answer, i)
    if not counts:
        return None, -1
    # max() keeps the first maximal element it meets; dicts iterate in first-occurrence order.
    winner = max(counts, key=lambda a: counts[a])
    return winner, first[winner]


def maj_at_n(answers: Sequence[Hashable | None], correct: Sequence[bool]) -> float:
    """maj@n of one problem: 1.0 when the majority answer (see `majority_vote`) is correct, else 0.0.

    The voted answer counts as correct when the verifier accepted at least one sample that gave it
    (samples with the same extracted answer normally share their verdict). No extracted answer at
    all counts as wrong. Wang et al. 2023, "Self-Consistency Improves Chain of Thought Reasoning".
    """
    if len(answers) != len(correct):
        raise ValueError(f"maj@n needs one verdict per answer; got {len(answers)} answers, {len(correct)} verdicts")
    winner, _ = majority_vote(answers)
    if winner is None:
        return 0.0
    return float(any(ok for a, ok in zip(answers, correct) if a is not None and a == winner))


def mean_ci(values: Sequence[float], z: float = Z_95) -> tuple[float, float, float]:
    """(mean, low, high) of per-problem values: mean ± z · s / sqrt(P), s the sample std (ddof=1).

    Normal approximation over P problems (central limit theorem); NaN values (a problem where the
    metric is undefined, e.g. entropy of empty responses) are left out. With fewer than two values
    the interval is undefined and both bounds are NaN; with no values everything is NaN. For rates
    near 0 or 1 on few problems the interval is too narrow (it collapses to a point when all problems
    agree), so `summarize` uses it only for metrics that are not rates.
    """
    kept = [float(v) for v in values if not math.isnan(v)]
    p = len(kept)
    if p == 0:
        return math.nan, math.nan, math.nan
    mean = math.fsum(kept) / p
    if p < 2:
        return mean, math.nan, math.nan
    var = math.fsum((v - mean) ** 2 for v in kept) / (p - 1)
    half = z * math.sqrt(var / p)
    return mean, mean - half, mean + half


def wilson_interval(mean: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval (Wilson 1927) of a proportion with observed mean `mean` over `n` trials:

        (p + z^2 / 2n -+ z sqrt(p (1 - p) / n + z^2 / 4n^2)) / (1 + z^2 / n)

    Inside [0, 1] and never of zero width for n >= 1: 0 of 6 gives [0, 0.390]. NaN bounds for n = 0.
    """
    if n < 1 or math.isnan(mean):
        return math.nan, math.nan
    p = min(max(float(mean), 0.0), 1.0)
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # At p = 0 (1) the lower (upper) bound is exactly 0 (1); float rounding would leave ~1e-17.
    low = 0.0 if p == 0.0 else max(0.0, centre - half)
    high = 1.0 if p == 1.0 else min(1.0, centre + half)
    return low, high


def cluster_means(values: Sequence[float], clusters: Sequence[Hashable] | None) -> list[float]:
    """The mean of `values` within each cluster (first-appearance order), NaNs left out; no clusters:
    the values themselves (without NaNs)."""
    if clusters is None:
        return [float(v) for v in values if not math.isnan(v)]
    if len(clusters) != len(values):
        raise ValueError(f"clusters must have one entry per value: {len(clusters)} clusters, {len(values)} values")
    sums: dict[Hashable, list[float]] = {}
    for v, c in zip(values, clusters):
        if not math.isnan(v):
            sums.setdefault(c, []).append(float(v))
    return [math.fsum(vs) / len(vs) for vs in sums.values()]


def summarize(
    per_problem: dict[str, Sequence[float]],
    rates: Collection[str] = (),
    clusters: Sequence[Hashable] | None = None,
) -> dict[str, float]:
    """Average each per-problem metric over problems and add `<name>_ci_low` / `<name>_ci_high`.

    `clusters` (one key per problem, e.g. the distinct problem's id) makes the intervals count each
    distinct problem once: values are first averaged within a cluster. The reported value stays the
    plain mean over all problems (equal to the mean over clusters when every problem repeats equally
    often). Metrics named in `rates` get the Wilson interval with n = number of clusters; the others
    the normal approximation over cluster means.
    """
    metrics: dict[str, float] = {}
    for name, values in per_problem.items():
        kept = [float(v) for v in values if not math.isnan(v)]
        mean = math.fsum(kept) / len(kept) if kept else math.nan
        groups = cluster_means(values, clusters)
        if name in rates:
            low, high = wilson_interval(mean, len(groups))
        else:
            _, low, high = mean_ci(groups)
            if not math.isnan(low):
                centre = math.fsum(groups) / len(groups)
                low, high = mean - (centre - low), mean + (high - centre)
        metrics[name] = mean
        metrics[f"{name}_ci_low"] = low
        metrics[f"{name}_ci_high"] = high
    return metrics


def rate_metrics(names: Sequence[str]) -> list[str]:
    """The metrics among `names` that are fractions in [0, 1]."""
    return [m for m in names if m.startswith(("pass@", "mean@", "maj@")) or m in ("format_rate", "truncated_frac")]


def per_problem_metrics(
    samples: Sequence[dict], n: int, ks: Sequence[int], has_extractor: bool
) -> dict[str, list[float]]:
    """Per-problem values of every metric, in display order (see rlvr.eval.runner for the list).

    `samples` are problem-major (n per problem), each with "correct", "reward", "extracted_answer",
    "components", "length", "finish_reason" and "_entropy_sum" (summed token entropy, or None).
    """
    per: dict[str, list[float]] = {f"pass@{k}": [] for k in ks}
    per[f"mean@{n}"] = []
    if has_extractor:
        per[f"maj@{n}"] = []
    per["reward_mean"] = []
    with_format = any(format_ok(s["components"]) is not None for s in samples)
    if with_format:
        per["format_rate"] = []
    per["response_len_mean"] = []
    per["truncated_frac"] = []
    with_entropy = any(s["_entropy_sum"] is not None for s in samples)
    if with_entropy:
        per["entropy"] = []

    for start in range(0, len(samples), n):
        group = samples[start : start + n]
        c = sum(s["correct"] for s in group)
        for k in ks:
            per[f"pass@{k}"].append(pass_at_k(n, c, k))
        per[f"mean@{n}"].append(c / n)
        if has_extractor:
            answers = [_hashable(s["extracted_answer"]) for s in group]
            per[f"maj@{n}"].append(maj_at_n(answers, [s["correct"] for s in group]))
        per["reward_mean"].append(sum(s["reward"] for s in group) / n)
        if with_format:
            per["format_rate"].append(sum(bool(format_ok(s["components"])) for s in group) / n)
        per["response_len_mean"].append(sum(s["length"] for s in group) / n)
        per["truncated_frac"].append(sum(s["finish_reason"] == "length" for s in group) / n)
        if with_entropy:
            tokens = sum(s["length"] for s in group)
            # Token mean within the problem; a problem whose responses are all empty has none.
            per["entropy"].append(sum(s["_entropy_sum"] for s in group) / tokens if tokens else math.nan)
    return per


def format_ok(components: dict[str, float]) -> bool | None:
    """Whether the reward components say the format is right; None when there is no format component."""
    if "format" not in components:
        return None
    return components["format"] >= 1.0


def _hashable(answer):
    if answer is None:
        return None
    try:
        hash(answer)
        return answer
    except TypeError:
        return repr(answer)
