"""Masked reductions: hand values, masked-out inf/nan ignored (values and gradients), empty masks, shapes."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.core.masked import check_same_shape, masked_mean, masked_sum, masked_var, masked_whiten

F64 = torch.float64
INF, NAN = float("inf"), float("nan")

# counted elements: row 0 -> 1, 2, 3; row 1 -> 4 (the rest is masked out and holds garbage)
VALUES = torch.tensor([[1.0, 2.0, 3.0, INF], [4.0, NAN, -INF, 100.0]], dtype=F64)
MASK = torch.tensor([[True, True, True, False], [True, False, False, False]])


def test_masked_sum_hand_values():
    assert masked_sum(VALUES, MASK).item() == 10.0  # 1 + 2 + 3 + 4
    assert masked_sum(VALUES, MASK, dim=1).tolist() == [6.0, 4.0]
    assert masked_sum(VALUES, MASK, dim=0).tolist() == [5.0, 2.0, 3.0, 0.0]


def test_masked_mean_hand_values():
    assert masked_mean(VALUES, MASK).item() == 2.5  # 10 / 4
    assert masked_mean(VALUES, MASK, dim=1).tolist() == [2.0, 4.0]  # 6 / 3, 4 / 1
    assert masked_mean(VALUES, MASK, dim=0).tolist() == [2.5, 2.0, 3.0, 0.0]  # empty column -> 0


def test_masked_var_hand_values():
    # counted 1, 2, 3, 4: mean 2.5, squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5
    assert masked_var(VALUES, MASK).item() == pytest.approx(5 / 3, abs=1e-15)  # Bessel: / (4 - 1)
    assert masked_var(VALUES, MASK, unbiased=False).item() == pytest.approx(5 / 4, abs=1e-15)
    one = torch.tensor([[7.0, INF]], dtype=F64)
    assert masked_var(one, torch.tensor([[True, False]])).item() == 0.0  # a single element: 0, not nan


def test_masked_whiten_hand_values():
    out = masked_whiten(VALUES, MASK)
    # (x - 2.5) / sqrt(5/3 + 1e-8) on the counted elements, 0 elsewhere
    scale = 1 / math.sqrt(5 / 3 + 1e-8)
    want = torch.tensor([[-1.5, -0.5, 0.5, 0.0], [1.5, 0.0, 0.0, 0.0]], dtype=F64) * scale
    torch.testing.assert_close(out, want, rtol=0, atol=1e-15)
    assert torch.equal(out[~MASK], torch.zeros(4, dtype=F64))
    # shift_mean=False adds the mean back: scale only
    kept = masked_whiten(VALUES, MASK, shift_mean=False)
    torch.testing.assert_close(kept[MASK], want[MASK] + 2.5, rtol=0, atol=1e-15)
    assert torch.equal(kept[~MASK], torch.zeros(4, dtype=F64))


def test_whitened_values_have_zero_mean_and_unit_variance():
    torch.manual_seed(0)
    x = torch.randn(5, 7, dtype=F64) * 3 + 2
    mask = torch.rand(5, 7) < 0.6
    out = masked_whiten(x, mask, eps=0.0)
    assert abs(masked_mean(out, mask).item()) < 1e-14
    assert masked_var(out, mask).item() == pytest.approx(1.0, abs=1e-13)


def test_masked_out_inf_nan_do_not_reach_gradients():
    for fn in (
        lambda v: masked_sum(v, MASK),
        lambda v: masked_mean(v, MASK),
        lambda v: masked_var(v, MASK),
        lambda v: (masked_whiten(v, MASK) * torch.arange(8, dtype=F64).view(2, 4)).sum(),
    ):
        v = VALUES.clone().requires_grad_(True)
        out = fn(v)
        assert torch.isfinite(out)
        out.backward()
        assert torch.isfinite(v.grad).all()
        assert torch.equal(v.grad[~MASK], torch.zeros(4, dtype=F64))
    # d var / d x_i = 2 (x_i - mean) / (M - 1) = 2 * (-1.5, -0.5, 0.5, 1.5) / 3 on the counted elements
    v = VALUES.clone().requires_grad_(True)
    masked_var(v, MASK).backward()
    torch.testing.assert_close(v.grad[MASK], torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0], dtype=F64), rtol=0, atol=1e-15)


def test_all_false_mask_gives_zero():
    x = torch.tensor([[1.0, NAN], [INF, 2.0]], dtype=F64, requires_grad=True)
    none = torch.zeros(2, 2, dtype=torch.bool)
    assert masked_sum(x, none).item() == 0.0
    assert masked_mean(x, none).item() == 0.0
    assert masked_mean(x, none, dim=1).tolist() == [0.0, 0.0]
    assert masked_var(x, none).item() == 0.0
    assert torch.equal(masked_whiten(x, none), torch.zeros(2, 2, dtype=F64))
    masked_mean(x, none).backward()
    assert torch.equal(x.grad, torch.zeros(2, 2, dtype=F64))


def test_float_mask_counts_like_bool():
    fmask = MASK.to(F64)
    assert masked_sum(VALUES, fmask).item() == 10.0
    assert masked_mean(VALUES, fmask, dim=1).tolist() == [2.0, 4.0]


def test_shape_mismatch_names_the_shapes():
    with pytest.raises(ValueError, match=r"^shape mismatch: values \[2, 4\], mask \[2, 3\]; these must all have the same shape$"):
        masked_sum(VALUES, MASK[:, :3])
    for fn in (masked_mean, masked_var, masked_whiten):
        with pytest.raises(ValueError, match=r"values \[2, 4\], mask \[4, 2\]"):
            fn(VALUES, MASK.T)
    with pytest.raises(ValueError, match=r"a \[2\], b \[3\], c \[2\]"):
        check_same_shape(a=torch.zeros(2), b=torch.zeros(3), c=torch.zeros(2), d=None)
    check_same_shape(a=torch.zeros(2, 3), b=torch.zeros(2, 3), c=None)  # same shapes and None: fine
