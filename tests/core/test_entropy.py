"""Entropy from logits: exactness, stability with huge logits, masked vocabulary, chunking."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.core.entropy import entropy_from_logits

D = torch.float64


def naive(logits):
    p = torch.softmax(logits, dim=-1)
    return -(p * torch.log(p)).sum(-1)


def test_hand_values():
    # uniform over 4: log 4; two-point [0, log 3] -> p = [1/4, 3/4]: -(1/4 log 1/4 + 3/4 log 3/4)
    assert entropy_from_logits(torch.zeros(4, dtype=D)).item() == pytest.approx(math.log(4), rel=1e-15)
    want = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert entropy_from_logits(torch.tensor([0.0, math.log(3)], dtype=D)).item() == pytest.approx(want, rel=1e-14)


def test_matches_naive_formula_and_its_gradient():
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 5, 11, generator=g, dtype=D) * 3).requires_grad_(True)
    ours, ref = entropy_from_logits(logits), naive(logits)
    assert ours.shape == (3, 5)
    assert torch.allclose(ours, ref, rtol=1e-13, atol=0)
    weights = torch.randn(3, 5, generator=g, dtype=D)
    (g_ours,) = torch.autograd.grad((ours * weights).sum(), logits)
    (g_ref,) = torch.autograd.grad((ref * weights).sum(), logits)
    assert torch.allclose(g_ours, g_ref, rtol=1e-12, atol=1e-14)


def test_matches_slow_reference_loop():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 6, generator=g, dtype=D) * 4
    got = entropy_from_logits(logits)
    for i in range(4):
        row = logits[i].tolist()
        z = sum(math.exp(v) for v in row)
        want = -sum(math.exp(v) / z * (v - math.log(z)) for v in row)
        assert got[i].item() == pytest.approx(want, rel=1e-13)


def test_huge_logits_are_finite_and_correct_in_float32():
    base = torch.tensor([[0.0, -1.0, -2.0, -0.5], [3.0, 3.0, 3.0, 3.0]])
    want = naive(base.double())
    for offset in (1e4, -1e4):
        got = entropy_from_logits(base + offset)
        # base + 1e4 is exact in float32 for these values, so only the shift could lose precision.
        assert torch.isfinite(got).all()
        assert torch.allclose(got.double(), want, rtol=0, atol=1e-6)
    # A near one-hot distribution: p = [1, e^-1e4, ...] -> entropy 0 (to float precision), not nan.
    peaked = torch.tensor([1e4, 0.0, 0.0, -1e4])
    assert entropy_from_logits(peaked).item() == 0.0
    # The naive formula gives nan there (0 * log 0), which is why it is not used.
    assert torch.isnan(naive(peaked))


def test_masked_vocabulary_entries_contribute_nothing():
    logits = torch.tensor([[0.0, 0.0, -math.inf, -math.inf], [1.0, -math.inf, 2.0, 0.5]], dtype=D, requires_grad=True)
    got = entropy_from_logits(logits)
    assert got[0].item() == pytest.approx(math.log(2), rel=1e-15)
    assert got[1].item() == pytest.approx(naive(torch.tensor([1.0, 2.0, 0.5], dtype=D)).item(), rel=1e-14)
    (grad,) = torch.autograd.grad(got.sum(), logits)
    assert torch.isfinite(grad).all() and grad[0, 2] == 0 and grad[1, 1] == 0


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 7, 100])
def test_chunked_equals_unchunked(chunk_size):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 7, 13, generator=g) * 5
    whole = entropy_from_logits(logits)
    assert torch.equal(entropy_from_logits(logits, chunk_size=chunk_size), whole)
    # The caller may also chunk along the sequence itself.
    parts = [entropy_from_logits(logits[:, i : i + 3]) for i in range(0, 7, 3)]
    assert torch.equal(torch.cat(parts, dim=1), whole)


def test_chunked_keeps_gradient():
    logits = torch.randn(2, 5, 6, dtype=D, requires_grad=True)
    (g_whole,) = torch.autograd.grad(entropy_from_logits(logits).sum(), logits)
    (g_chunk,) = torch.autograd.grad(entropy_from_logits(logits, chunk_size=3).sum(), logits)
    assert torch.allclose(g_whole, g_chunk, rtol=0, atol=1e-15)


def test_errors():
    with pytest.raises(ValueError, match=r"chunk_size must be >= 1"):
        entropy_from_logits(torch.zeros(2, 3), chunk_size=0)
    with pytest.raises(ValueError, match=r"vocabulary dimension"):
        entropy_from_logits(torch.tensor(1.0))
