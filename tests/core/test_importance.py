"""Training-inference importance weights: hand values, masking, overflow, slow reference, errors."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.core.importance import importance_weights

D = torch.float64
LOG = math.log


def batch():
    # row 0: raw token weights [1.5, 3, 0.25] (product 1.125); row 1: [4, 1, (pad)] (product 4)
    sampler = torch.tensor([[-1.0, -2.0, -0.5], [-3.0, -1.0, 0.0]], dtype=D)
    old = sampler + torch.tensor([[LOG(1.5), LOG(3.0), LOG(0.25)], [LOG(4.0), 0.0, 9.0]], dtype=D)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    return old, sampler, mask


def close(a, rows):
    return torch.allclose(a, torch.tensor(rows, dtype=D), rtol=1e-14, atol=1e-15)


def test_token_truncate_hand_values():
    old, sampler, mask = batch()
    w, m = importance_weights(old, sampler, mask, cap=2.0)
    # min(w, 2): [1.5, 2, 0.25], [2, 1, 0 (masked)]
    assert close(w, [[1.5, 2.0, 0.25], [2.0, 1.0, 0.0]])
    assert m["is_truncated_frac"].item() == pytest.approx(2 / 5)
    assert m["is_weight_mean"].item() == pytest.approx((1.5 + 2 + 0.25 + 2 + 1) / 5)
    assert m["is_weight_max"].item() == pytest.approx(2.0)
    # |old - sampler| = [log 1.5, log 3, log 4, log 4, 0] (|log 0.25| = log 4)
    assert m["logprob_mismatch"].item() == pytest.approx((LOG(1.5) + LOG(3) + 2 * LOG(4)) / 5)
    assert "is_masked_frac" not in m


def test_token_mask_hand_values():
    old, sampler, mask = batch()
    w, m = importance_weights(old, sampler, mask, mode="mask", cap=2.0)
    # w if w <= 2 else 0: [1.5, 0, 0.25], [0, 1, 0]
    assert close(w, [[1.5, 0.0, 0.25], [0.0, 1.0, 0.0]])
    assert m["is_masked_frac"].item() == pytest.approx(2 / 5) and "is_truncated_frac" not in m
    # lower = 0.5 also drops 0.25
    w, m = importance_weights(old, sampler, mask, mode="mask", cap=2.0, lower=0.5)
    assert close(w, [[1.5, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert m["is_masked_frac"].item() == pytest.approx(3 / 5)
    # the bounds themselves are kept
    w, _ = importance_weights(old, sampler, mask, mode="mask", cap=3.0, lower=0.25)
    assert close(w, [[1.5, 3.0, 0.25], [0.0, 1.0, 0.0]])


def test_sequence_level_hand_values():
    old, sampler, mask = batch()
    # row 0: 1.5 * 3 * 0.25 = 1.125 on every valid token; row 1: 4 * 1 = 4 (the masked 9.0 is ignored)
    w, m = importance_weights(old, sampler, mask, level="sequence", cap=5.0)
    assert close(w, [[1.125] * 3, [4.0, 4.0, 0.0]])
    assert m["is_truncated_frac"] == 0
    w, m = importance_weights(old, sampler, mask, level="sequence", cap=2.0)
    assert close(w, [[1.125] * 3, [2.0, 2.0, 0.0]])
    assert m["is_truncated_frac"].item() == pytest.approx(2 / 5)
    w, m = importance_weights(old, sampler, mask, level="sequence", mode="mask", cap=2.0)
    assert close(w, [[1.125] * 3, [0.0, 0.0, 0.0]])
    assert m["is_masked_frac"].item() == pytest.approx(2 / 5)


def test_sequence_weight_that_overflows_is_still_capped():
    # 20 tokens with a log-ratio of 50 each: w = e^1000 overflows float64, yet the result is exact.
    old = torch.full((1, 20), 50.0, dtype=D)
    sampler = torch.zeros(1, 20, dtype=D)
    mask = torch.ones(1, 20, dtype=torch.bool)
    w, m = importance_weights(old, sampler, mask, level="sequence", cap=2.0)
    assert (w == 2.0).all() and m["is_truncated_frac"] == 1
    w, m = importance_weights(old, sampler, mask, level="sequence", mode="mask", cap=2.0)
    assert (w == 0).all() and m["is_masked_frac"] == 1
    assert all(torch.isfinite(v) for v in m.values())


def test_weights_are_detached_and_masked_garbage_ignored():
    old, sampler, mask = batch()
    old = old.clone().requires_grad_(True)
    w, m = importance_weights(old, sampler, mask)
    assert not w.requires_grad and not any(v.requires_grad for v in m.values())
    dirty_old = torch.where(mask, old.detach(), math.nan)
    dirty_sampler = torch.where(mask, sampler, -math.inf)
    for level in ("token", "sequence"):
        for mode in ("truncate", "mask"):
            clean_w, clean_m = importance_weights(old.detach(), sampler, mask, level=level, mode=mode)
            dirty_w, dirty_m = importance_weights(dirty_old, dirty_sampler, mask, level=level, mode=mode)
            assert torch.equal(clean_w, dirty_w) and (dirty_w[~mask] == 0).all()
            assert all(torch.equal(clean_m[k], dirty_m[k]) for k in clean_m)


def test_padding_changes_nothing_and_all_false_mask_gives_zeros():
    old, sampler, mask = batch()
    pad = lambda x, v: torch.cat([x, torch.full((2, 2), v, dtype=D)], 1)  # noqa: E731
    mask_p = torch.cat([mask, torch.zeros(2, 2, dtype=torch.bool)], 1)
    for level in ("token", "sequence"):
        w, m = importance_weights(old, sampler, mask, level=level)
        w_p, m_p = importance_weights(pad(old, 5.0), pad(sampler, -5.0), mask_p, level=level)
        assert torch.equal(w_p[:, :3], w) and (w_p[:, 3:] == 0).all()
        assert all(torch.equal(m[k], m_p[k]) for k in m)
        w0, m0 = importance_weights(old, sampler, torch.zeros_like(mask), level=level)
        assert (w0 == 0).all() and all(v == 0 for v in m0.values())


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("mode", ["truncate", "mask"])
def test_matches_slow_reference(level, mode):
    g = torch.Generator().manual_seed(7)
    old = -torch.rand(6, 9, generator=g, dtype=D) * 3
    sampler = old + 0.4 * torch.randn(6, 9, generator=g, dtype=D)
    mask = torch.rand(6, 9, generator=g) < 0.7
    cap, lower = 1.5, (0.8 if mode == "mask" else None)
    w, _ = importance_weights(old, sampler, mask, level=level, mode=mode, cap=cap, lower=lower)
    for i in range(6):
        cols = [j for j in range(9) if mask[i, j]]
        seq = math.exp(sum(old[i, j].item() - sampler[i, j].item() for j in cols))
        for j in range(9):
            if not mask[i, j]:
                want = 0.0
            else:
                raw = seq if level == "sequence" else math.exp(old[i, j].item() - sampler[i, j].item())
                if mode == "truncate":
                    want = min(raw, cap)
                else:
                    want = raw if lower <= raw <= cap else 0.0
            assert w[i, j].item() == pytest.approx(want, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"cap": 0.0}, ValueError, r"cap must be > 0"),
        ({"cap": -1.0}, ValueError, r"cap must be > 0"),
        ({"lower": 0.5}, ValueError, r"lower applies only to mode='mask'"),
        ({"mode": "mask", "cap": 2.0, "lower": 2.0}, ValueError, r"0 <= lower < cap = 2.0"),
        ({"level": "tokens"}, ValueError, r"unknown importance-weight level 'tokens'; known: token, sequence"),
        ({"mode": "clip"}, ValueError, r"unknown importance-weight mode 'clip'; known: truncate, mask"),
    ],
)
def test_errors(kwargs, error, message):
    old, sampler, mask = batch()
    with pytest.raises(error, match=message):
        importance_weights(old, sampler, mask, **kwargs)


def test_shape_mismatch_names_the_shapes():
    old, sampler, mask = batch()
    with pytest.raises(ValueError, match=r"sampler_logprobs \[2, 2\]"):
        importance_weights(old, sampler[:, :2], mask)
