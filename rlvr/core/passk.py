"""The unbiased pass@k estimator (Chen et al. 2021, "Evaluating Large Language Models Trained on Code")."""

from __future__ import annotations

import numbers

import numpy as np
import torch
from torch import Tensor


def pass_at_k(n, c, k: int):
    """Probability that at least one of k samples drawn without replacement from n is correct, given
    that c of the n are: 1 - C(n - c, k) / C(n, k) (Chen et al. 2021, eq. 1).

    Computed as in the paper's numerically stable form, 1 - prod_{i = n-c+1}^{n} (1 - k / i), but in
    log space: 1 - exp(sum log1p(-k / i)) evaluated with expm1, so that no binomial coefficient is ever
    formed (no overflow for n in the thousands) and a result near 0 keeps its relative precision.
    It is exactly 0 when c = 0 and exactly 1 when n - c < k (every k-subset holds a correct sample).

    `n` and `c` are ints, or tensors / numpy arrays / lists of ints (broadcast together); `k` is an int.
    Returns a float for ints, a float64 tensor for tensors, a float64 numpy array otherwise.
    Vectorised through one suffix sum over i = 1..max(n): cost O(max(n) + len), no loop over problems.

    >>> pass_at_k(5, 2, 2)  # 1 - C(3, 2) / C(5, 2) = 1 - 3/10
    0.7
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k must be an int >= 1; got {k!r}")
    k = int(k)
    scalar = _is_int(n) and _is_int(c)
    as_numpy = not scalar and not isinstance(n, Tensor) and not isinstance(c, Tensor)
    device = n.device if isinstance(n, Tensor) else c.device if isinstance(c, Tensor) else None
    n_t, c_t = torch.broadcast_tensors(_counts("n", n, device), _counts("c", c, device))
    _check(n_t, c_t, k, scalar)

    certain = (n_t - c_t) < k  # every k-subset contains a correct sample
    top = int(n_t.max()) if n_t.numel() else 0
    i = torch.arange(1, top + 1, dtype=torch.float64, device=n_t.device)
    # log(1 - k/i) for i > k; the i <= k terms are never summed (they only occur when `certain`).
    terms = torch.where(i > k, torch.log1p(-k / i.clamp(min=k + 1)), torch.zeros_like(i))
    # suffix[m] = sum_{i > m} terms_i, so sum_{i = n-c+1}^{n} = suffix[n - c] - suffix[n]. Summing from
    # the top down keeps the few-term sums (small c at n = max n, the common case) exact to rounding.
    suffix = torch.cat([terms.flip(0).cumsum(0).flip(0), terms.new_zeros(1)])
    lo = (n_t - c_t).clamp(min=0)
    log_ratio = suffix[lo] - suffix[n_t]
    result = torch.where(certain, torch.ones_like(log_ratio), 0.0 - torch.expm1(log_ratio))  # 0.0 - : no -0.0
    if scalar:
        return float(result)
    return result.cpu().numpy() if as_numpy else result


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _counts(name: str, x, device) -> Tensor:
    if isinstance(x, bool):
        raise ValueError(f"{name} must be an integer count; got {x!r}")
    t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer counts; got dtype {t.dtype}")
    return t.to(device=device, dtype=torch.int64)


def _check(n: Tensor, c: Tensor, k: int, scalar: bool) -> None:
    for bad, what in (
        (c < 0, "0 <= c <= n; got c={c}, n={n}"),
        (c > n, "0 <= c <= n; got c={c}, n={n}"),
        (n < k, "k <= n (at least k samples per problem); got k={k}, n={n}"),
    ):
        if bool(bad.any()):
            first = tuple(bad.nonzero()[0].tolist())
            where = "" if scalar else f" at index {first if len(first) > 1 else first[0]}"
            msg = what.format(c=c[first].tolist(), n=n[first].tolist(), k=k)
            raise ValueError(f"pass_at_k needs {msg}{where}")
