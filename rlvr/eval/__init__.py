"""Evaluation: sample n responses per problem, score them, report pass@k, mean@n, maj@n, format rate,
response length, truncation and entropy with 95% confidence intervals over problems."""

from __future__ import annotations

from rlvr.eval.metrics import maj_at_n, majority_vote, mean_ci, pass_at_k, per_problem_metrics
from rlvr.eval.result import EvalResult
from rlvr.eval.runner import evaluate

__all__ = ["EvalResult", "evaluate", "maj_at_n", "majority_vote", "mean_ci", "pass_at_k", "per_problem_metrics"]
