"""Statistics of a noisy vector quantity measured on independent batches: the trace of its covariance, the
squared norm of its mean (the signal), their ratio with jackknife and Fieller intervals, and leave-one-out
cosines. rlvr.compare.grad_variance applies them to the policy gradients of LLM rollouts, rlvr.envs.gym to
those of classic-environment episodes; `t975` is the t quantile that the studies' intervals share."""

from __future__ import annotations

import math
from typing import Any

_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042]


def t975(df: int) -> float:
    if df < 1:
        return math.nan
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959963984540054
    return z + (z**3 + z) / (4 * df)  # Cornish-Fisher, within 1e-3 of the exact value beyond df 30


def variance_statistics(estimators: list[str], batches: int, gradient) -> dict[str, dict[str, Any]]:
    """The statistics of rlvr.compare.grad_variance's docstring from `gradient(b, e)`, estimator e's flattened gradient on
    rollout batch b (each called twice, so memory stays at a few gradient vectors whatever the model).

    Per estimator: `trace_cov` {"mean" (T), "low", "high", "n"}; `signal` (D, which can be negative);
    `mean_grad_norm` (||gbar||, noise included); `relative_variance` {"estimate" (T / D, None when
    unresolved), "low", "high" (None: unbounded), "unresolved"}; `cosine_loo` {"mean", "n", "per_batch"}
    (a batch whose gradient, or the others' sum, is 0 has no cosine: None, left out of the mean);
    `batches`. No interval with fewer than 3 batches (a jackknife of a variance needs R - 1 >= 2)."""
    if batches < 2:
        raise ValueError(f"batches must be >= 2 to estimate a variance, got {batches}")
    out: dict[str, dict[str, Any]] = {}
    for e in estimators:
        total, squares = None, []
        for b in range(batches):
            g = gradient(b, e).double()
            total = g if total is None else total + g
            squares.append(float(g.pow(2).sum()))
        total_sq = float(total.pow(2).sum())
        dots = [float((gradient(b, e).double() * total).sum()) for b in range(batches)]
        out[e] = batch_statistics(squares, dots, total_sq)
    return out


def batch_statistics(squares: list[float], dots: list[float], total_sq: float) -> dict[str, Any]:
    """`variance_statistics`' record from the per-batch ||g_b||^2 (`squares`), <g_b, S> (`dots`) and
    ||S||^2 (`total_sq`), S = sum_b g_b: every statistic, leave-one-out ones included, is a function of these."""
    r = len(squares)
    q_sum = math.fsum(squares)
    trace = (q_sum - total_sq / r) / (r - 1)
    signal = (total_sq - q_sum) / (r * (r - 1))
    cosines = []
    for q, d in zip(squares, dots):
        rest_sq = max(total_sq - 2 * d + q, 0.0)  # ||S - g_b||^2
        c = (d - q) / math.sqrt(q * rest_sq) if q > 0 and rest_sq > 0 else None
        cosines.append(None if c is None else min(1.0, max(-1.0, c)))  # rounding can pass 1
    defined = [c for c in cosines if c is not None]
    trace_ci, ratio_ci = (math.nan, math.nan), (None, None)
    if r >= 3:
        # leave-one-out T_(-b), D_(-b), then the jackknife pseudo-values r X - (r - 1) X_(-b)
        loo_t, loo_d = [], []
        for q, d in zip(squares, dots):
            rest_sq, rest_q = max(total_sq - 2 * d + q, 0.0), q_sum - q
            loo_t.append((rest_q - rest_sq / (r - 1)) / (r - 2))
            loo_d.append((rest_sq - rest_q) / ((r - 1) * (r - 2)))
        t = t975(r - 1)
        if trace > 0 and min(loo_t) > 0:
            pseudo = [r * math.log(trace) - (r - 1) * math.log(x) for x in loo_t]
            half = t * math.sqrt(_covariance(pseudo, pseudo) / r)
            trace_ci = (trace * math.exp(-half), trace * math.exp(half))
        pt = [r * trace - (r - 1) * x for x in loo_t]
        pd = [r * signal - (r - 1) * x for x in loo_d]
        ratio_ci = _fieller(trace, signal, _covariance(pt, pt) / r, _covariance(pd, pd) / r,
                            _covariance(pt, pd) / r, t)
    unresolved = signal <= 0
    return {
        "trace_cov": {"mean": trace, "low": trace_ci[0], "high": trace_ci[1], "n": r},
        "signal": signal,
        "mean_grad_norm": math.sqrt(max(total_sq, 0.0)) / r,
        "relative_variance": {"estimate": None if unresolved else trace / signal, "low": ratio_ci[0],
                              "high": ratio_ci[1], "unresolved": unresolved},
        "cosine_loo": {"mean": math.fsum(defined) / len(defined) if defined else None, "n": len(defined),
                       "per_batch": cosines},
        "batches": r,
    }


def _covariance(x: list[float], y: list[float]) -> float:
    mx, my = math.fsum(x) / len(x), math.fsum(y) / len(y)
    return math.fsum((a - mx) * (b - my) for a, b in zip(x, y)) / (len(x) - 1)


def _fieller(trace: float, signal: float, var_t: float, var_d: float, cov: float,
             t: float) -> tuple[float | None, float | None]:
    """Fieller's interval for tr Sigma / ||mu||^2 from T, D and their jackknife (co)variances: the rho with
    (T - rho D)^2 <= t^2 Var(T - rho D). Solved for s = 1/rho = D/T, whose quadratic opens upwards whenever T
    is resolved (T^2 > t^2 Var T); s in [s_lo, s_hi] gives rho in [1/s_hi, 1/s_lo], unbounded above when
    s_lo <= 0 (D not resolved from 0). (None, None) when T is not resolved or no s > 0 passes."""
    a = trace * trace - t * t * var_t
    b = -2 * (signal * trace - t * t * cov)
    c = signal * signal - t * t * var_d
    disc = b * b - 4 * a * c
    if a <= 0 or disc < 0:
        return None, None
    s_lo, s_hi = (-b - math.sqrt(disc)) / (2 * a), (-b + math.sqrt(disc)) / (2 * a)
    if s_hi <= 0:
        return None, None
    return 1 / s_hi, (1 / s_lo if s_lo > 0 else None)
