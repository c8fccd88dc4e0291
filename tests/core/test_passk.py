"""pass@k: brute force over subsets, exact fractions at large n, edge cases, vectorisation, errors."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from rlvr.core.passk import pass_at_k


def brute_force(n, c, k):
    """Fraction of the k-subsets of n samples (the first c correct) that hold a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


def exact(n, c, k):
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


def test_hand_values():
    # 1 - C(3, 2)/C(5, 2) = 1 - 3/10; 1 - C(8, 3)/C(10, 3) = 1 - 56/120
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7, abs=1e-15)
    assert pass_at_k(10, 2, 3) == pytest.approx(1 - 56 / 120, abs=1e-15)
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25, abs=1e-15)  # pass@1 = c / n


def test_matches_brute_force_enumeration_for_small_n():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(brute_force(n, c, k), rel=1e-13, abs=1e-15), (n, c, k)


def test_pass_at_1_is_the_fraction_correct():
    n = torch.tensor([7, 7, 100, 3000])
    c = torch.tensor([0, 3, 37, 2999])
    torch.testing.assert_close(pass_at_k(n, c, 1), c.double() / n.double(), rtol=1e-14, atol=0)


@pytest.mark.parametrize("n", [2000, 5000])
def test_large_n_against_exact_fractions(n):
    cases = [(c, k) for c in (1, 2, 17, 100, n // 2, n - 10) for k in (1, 2, 10, 100, 1000) if n - c >= k]
    for c, k in cases:
        want = float(exact(n, c, k))
        got = pass_at_k(n, c, k)
        assert math.isfinite(got)
        assert abs(got - want) <= 1e-13 * want, (n, c, k, got, want)
    # the same cases vectorised, mixed with a larger n so that n is not the table's top
    c = torch.tensor([c for c, _ in cases if _ == 10] + [0])
    nn = torch.tensor([n] * (len(c) - 1) + [n + 777])
    want = torch.tensor([float(exact(n, int(ci), 10)) for ci in c[:-1]] + [0.0], dtype=torch.float64)
    torch.testing.assert_close(pass_at_k(nn, c, 10), want, rtol=1e-12, atol=0)


def test_edge_cases():
    assert pass_at_k(10, 0, 3) == 0.0 and math.copysign(1, pass_at_k(10, 0, 3)) == 1  # not -0.0
    assert pass_at_k(10, 8, 3) == 1.0  # n - c = 2 < k: every 3-subset has a correct one
    assert pass_at_k(10, 7, 3) < 1.0  # n - c = 3 = k: one all-wrong subset out of C(10, 3) = 120
    assert pass_at_k(10, 7, 3) == pytest.approx(1 - 1 / 120, abs=1e-15)
    assert pass_at_k(5, 5, 5) == 1.0
    assert pass_at_k(5, 0, 5) == 0.0


def test_vectorised_types_and_broadcasting():
    n = [5, 5, 10, 10]
    c = [0, 2, 3, 10]
    want = [pass_at_k(a, b, 2) for a, b in zip(n, c)]
    as_tensor = pass_at_k(torch.tensor(n), torch.tensor(c), 2)
    assert isinstance(as_tensor, torch.Tensor) and as_tensor.dtype == torch.float64
    # vectorised sums run over a table up to max(n), so agree with the scalar path to rounding only
    np.testing.assert_allclose(as_tensor.numpy(), want, rtol=1e-15, atol=0)
    as_numpy = pass_at_k(np.array(n), np.array(c), 2)
    assert isinstance(as_numpy, np.ndarray) and as_numpy.dtype == np.float64
    np.testing.assert_allclose(as_numpy, want, rtol=1e-15, atol=0)
    np.testing.assert_allclose(pass_at_k(n, c, 2), want, rtol=1e-15, atol=0)  # lists behave like arrays
    np.testing.assert_allclose(pass_at_k(10, torch.tensor([0, 3, 10]), 2), [0.0, want[2], want[3]], rtol=1e-15, atol=0)
    grid = pass_at_k(torch.tensor([[5], [10]]), torch.tensor([0, 3]), 2)  # [2, 1] with [2] -> [2, 2]
    assert grid.shape == (2, 2)
    np.testing.assert_allclose(grid[1].numpy(), [0.0, want[2]], rtol=1e-15, atol=0)
    assert isinstance(pass_at_k(np.int64(5), 2, np.int32(2)), float)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"^pass_at_k needs 0 <= c <= n; got c=6, n=5$"):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError, match=r"^pass_at_k needs 0 <= c <= n; got c=-1, n=5$"):
        pass_at_k(5, -1, 1)
    with pytest.raises(ValueError, match=r"pass_at_k needs k <= n \(at least k samples per problem\); got k=4, n=3 at index 1$"):
        pass_at_k(torch.tensor([8, 3]), torch.tensor([1, 1]), 4)
    with pytest.raises(ValueError, match=r"0 <= c <= n; got c=9, n=8 at index 2"):
        pass_at_k([8, 8, 8], [1, 1, 9], 1)
    with pytest.raises(ValueError, match=r"k must be an int >= 1; got 0"):
        pass_at_k(5, 1, 0)
    with pytest.raises(ValueError, match=r"k must be an int >= 1; got 1.5"):
        pass_at_k(5, 1, 1.5)
    with pytest.raises(ValueError, match=r"n must hold integer counts; got dtype torch.float64"):
        pass_at_k(np.array([5.0]), [1], 1)
    with pytest.raises(ValueError, match=r"c must be an integer count; got True"):
        pass_at_k(5, True, 1)
