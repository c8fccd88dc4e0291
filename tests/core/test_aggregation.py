"""Loss aggregation: hand values, micro-batch equivalence, masking invariants, slow reference, errors."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.core.aggregation import AGGREGATIONS, aggregate, batch_counts
from rlvr.core.losses import policy_loss

D = torch.float64
MODES = ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm"]


def test_registry_holds_exactly_the_four_modes():
    assert sorted(AGGREGATIONS) == sorted(MODES)


# Rows: [1, 2, 3] (3 tokens), [4, (pad)] (1 token), all masked, [10, 20] (2 tokens).
LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 99.0, 99.0], [7.0, 7.0, 7.0], [10.0, 20.0, 99.0]], dtype=D)
MASK = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0], [1, 1, 0]], dtype=torch.bool)


@pytest.mark.parametrize(
    ("mode", "kwargs", "expected"),
    [
        # 40 / 6 valid tokens
        ("token_mean", {}, 40 / 6),
        # row means 2, 4, 15 over the 3 rows that have tokens (the all-masked row does not count)
        ("seq_mean_token_mean", {}, (2 + 4 + 15) / 3),
        # row sums 6, 4, 30 over 3 rows
        ("seq_mean_token_sum", {}, 40 / 3),
        # row sums over 3 rows, divided by T = 3 by default ...
        ("seq_mean_token_sum_norm", {}, 40 / (3 * 3)),
        # ... or by the generation budget
        ("seq_mean_token_sum_norm", {"constant": 8}, 40 / (8 * 3)),
        # explicit global denominators
        ("token_mean", {"num_tokens": 10}, 40 / 10),
        ("seq_mean_token_mean", {"num_sequences": 4}, 21 / 4),
        ("seq_mean_token_sum", {"num_sequences": torch.tensor(5)}, 40 / 5),
        ("seq_mean_token_sum_norm", {"num_sequences": 5, "constant": 2.0}, 40 / 10),
    ],
)
def test_hand_values(mode, kwargs, expected):
    assert aggregate(LOSS, MASK, mode, **kwargs).item() == pytest.approx(expected, rel=1e-14)


def test_batch_counts_skip_all_masked_rows():
    counts = batch_counts(MASK)
    assert counts["num_tokens"].item() == 6 and counts["num_sequences"].item() == 3


def test_numeric_mask_counts_where_non_zero():
    for mode in MODES:
        assert aggregate(LOSS, MASK.to(D), mode) == aggregate(LOSS, MASK, mode)


def reference(loss, mask, mode, num_tokens=None, num_sequences=None, constant=None):
    """Python loops over rows and tokens."""
    rows = []
    for i in range(loss.shape[0]):
        vals = [loss[i, j].item() for j in range(loss.shape[1]) if mask[i, j]]
        if vals:
            rows.append(vals)
    n_tok = num_tokens if num_tokens is not None else sum(len(r) for r in rows)
    n_seq = num_sequences if num_sequences is not None else len(rows)
    if mode == "token_mean":
        return sum(sum(r) for r in rows) / max(n_tok, 1)
    if mode == "seq_mean_token_mean":
        return sum(sum(r) / len(r) for r in rows) / max(n_seq, 1)
    total = sum(sum(r) for r in rows) / max(n_seq, 1)
    if mode == "seq_mean_token_sum_norm":
        total /= constant if constant is not None else loss.shape[1]
    return total


@pytest.mark.parametrize("mode", MODES)
def test_matches_slow_reference(mode):
    g = torch.Generator().manual_seed(0)
    for trial in range(5):
        loss = torch.randn(7, 9, generator=g, dtype=D)
        mask = torch.rand(7, 9, generator=g) < 0.6
        mask[trial % 7] = False
        got = aggregate(loss, mask, mode).item()
        assert got == pytest.approx(reference(loss, mask, mode), rel=1e-12, abs=1e-15)
        got = aggregate(loss, mask, mode, num_tokens=40, num_sequences=9, constant=12).item()
        want = reference(loss, mask, mode, num_tokens=40, num_sequences=9, constant=12)
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15)


def make_batch(seed=0, n=11, length=8):
    g = torch.Generator().manual_seed(seed)
    lp = -torch.rand(n, length, generator=g, dtype=D) * 2
    old = lp + 0.3 * torch.randn(n, length, generator=g, dtype=D)
    adv = torch.randn(n, length, generator=g, dtype=D)
    lengths = torch.randint(0, length + 1, (n,), generator=g)
    lengths[2] = 0  # an all-masked row
    mask = torch.arange(length)[None, :] < lengths[:, None]
    return lp, old, adv, mask


def grad_of(lp, old, adv, mask, mode, **kwargs):
    leaf = lp.clone().requires_grad_(True)
    per_token, _ = policy_loss("ppo_clip", logprobs=leaf, old_logprobs=old, advantages=adv, loss_mask=mask)
    loss = aggregate(per_token, mask, mode, **kwargs)
    (grad,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), grad


SPLITS = [(0, 3), (3, 4), (4, 9), (9, 11)]  # uneven micro-batches: 3, 1, 5 and 2 rows


@pytest.mark.parametrize("mode", MODES)
def test_micro_batches_with_global_counts_equal_the_whole_batch(mode):
    lp, old, adv, mask = make_batch()
    constant = 16  # the generation budget: must not depend on a micro-batch's padding
    whole_loss, whole_grad = grad_of(lp, old, adv, mask, mode, constant=constant)
    counts = batch_counts(mask)
    loss_sum, grad_sum = torch.zeros((), dtype=D), torch.zeros_like(lp)
    for a, b in SPLITS:
        # Each micro-batch is cut to its own longest row, as a trainer would pad it.
        width = max(int(mask[a:b].sum(1).max()), 1)
        mb = [x[a:b, :width] for x in (lp, old, adv, mask)]
        loss, grad = grad_of(*mb, mode, constant=constant, **counts)
        loss_sum += loss
        grad_sum[a:b, :width] += grad
    assert loss_sum.item() == pytest.approx(whole_loss.item(), rel=1e-13)
    assert torch.allclose(grad_sum, whole_grad, rtol=0, atol=1e-15)


@pytest.mark.parametrize("mode", ["token_mean", "seq_mean_token_mean"])
def test_micro_batches_without_global_counts_differ(mode):
    # The equivalence above depends on the global counts: without them it fails, so that test has teeth.
    lp, old, adv, mask = make_batch()
    _, whole_grad = grad_of(lp, old, adv, mask, mode)
    grad_sum = torch.zeros_like(lp)
    for a, b in SPLITS:
        _, grad = grad_of(lp[a:b], old[a:b], adv[a:b], mask[a:b], mode)
        grad_sum[a:b] += grad
    assert not torch.allclose(grad_sum, whole_grad, rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_all_false_mask_gives_zero_and_zero_gradient(mode):
    loss = torch.randn(3, 4, dtype=D, requires_grad=True)
    mask = torch.zeros(3, 4, dtype=torch.bool)
    for kwargs in ({}, {"num_tokens": 0, "num_sequences": 0}):
        value = aggregate(loss, mask, mode, **kwargs)
        (grad,) = torch.autograd.grad(value, loss)
        assert value.item() == 0 and (grad == 0).all()


@pytest.mark.parametrize("mode", MODES)
def test_masked_inf_nan_do_not_leak(mode):
    clean = torch.where(MASK, LOSS, 0.0).requires_grad_(True)
    dirty_values = LOSS.clone()
    dirty_values[1, 1], dirty_values[1, 2], dirty_values[2, 0] = math.inf, math.nan, -math.inf
    dirty = dirty_values.requires_grad_(True)
    v_clean, v_dirty = aggregate(clean, MASK, mode), aggregate(dirty, MASK, mode)
    (g_clean,) = torch.autograd.grad(v_clean, clean)
    (g_dirty,) = torch.autograd.grad(v_dirty, dirty)
    assert v_dirty.item() == v_clean.item() and torch.equal(g_dirty, g_clean)
    assert (g_dirty[~MASK] == 0).all()


@pytest.mark.parametrize("mode", MODES)
def test_padding_columns_and_rows_change_nothing(mode):
    padded = torch.cat([torch.cat([LOSS, torch.full((4, 3), 5.0, dtype=D)], 1), torch.full((2, 6), 5.0, dtype=D)])
    mask = torch.zeros(6, 6, dtype=torch.bool)
    mask[:4, :3] = MASK
    # The Dr. GRPO constant is fixed; its default (T) would change with the padding, by design.
    kwargs = {"constant": 8} if mode == "seq_mean_token_sum_norm" else {}
    assert aggregate(padded, mask, mode, **kwargs).item() == aggregate(LOSS, MASK, mode, **kwargs).item()


def test_errors():
    with pytest.raises(KeyError, match=r"unknown aggregation 'token-mean'; known: token_mean, .* \(did you mean 'token_mean'\?\)"):
        aggregate(LOSS, MASK, "token-mean")
    with pytest.raises(ValueError, match=r"per_token_loss \[4, 3\], loss_mask \[4, 2\]"):
        aggregate(LOSS, MASK[:, :2], "token_mean")
    with pytest.raises(ValueError, match=r"must be \[N, T\] \(2-D\), got shape \[12\]"):
        aggregate(LOSS.flatten(), MASK.flatten(), "token_mean")
    with pytest.raises(ValueError, match=r"num_tokens must be >= 0"):
        aggregate(LOSS, MASK, "token_mean", num_tokens=-1)
    with pytest.raises(ValueError, match=r"num_sequences must be >= 0"):
        aggregate(LOSS, MASK, "seq_mean_token_mean", num_sequences=-2)
    with pytest.raises(ValueError, match=r"constant must be > 0 \(the generation budget"):
        aggregate(LOSS, MASK, "seq_mean_token_sum_norm", constant=0)
