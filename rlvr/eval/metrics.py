"""Per-problem evaluation metrics and their confidence intervals.

Every metric is first computed for each problem from that problem's n samples, then averaged over
problems, so each problem weighs the same whatever its response lengths. The 95% confidence interval
of a metric is a normal approximation over problems (see `mean_ci`).

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
    near 0 or 1 on few problems the interval is too narrow (it can even collapse to a point when all
    problems agree); it is meant for comparing runs on a few hundred problems.
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


def summarize(per_problem: dict[str, Sequence[float]], rates: Collection[str] = ()) -> dict[str, float]:
    """Average each per-problem metric over problems and add `<name>_ci_low` / `<name>_ci_high`.

    The interval of a metric named in `rates` (a fraction, such as pass@k) is clipped to [0, 1],
    where the normal approximation can overshoot.
    """
    metrics: dict[str, float] = {}
    for name, values in per_problem.items():
        mean, low, high = mean_ci(values)
        if name in rates:
            low, high = max(low, 0.0), min(high, 1.0)  # NaN stays NaN: max/min return their first argument
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
