"""The sampling filter shared by sampler and trainer (rlvr.core.filtering)."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.core.filtering import filter_logits_, filtering_active, keep_mask


def test_keep_mask_hand_values():
    probs = torch.tensor([[0.05, 0.4, 0.3, 0.15, 0.1]])
    logits = probs.log()
    # top-p 0.75: sorted 0.4, 0.3 (mass before 0.4 < 0.75), 0.15 (mass before 0.7 < 0.75) -> 3 kept
    assert keep_mask(logits, 0, 0.75).tolist() == [[False, True, True, True, False]]
    # top-k 2 then top-p 0.5 of the renormalised pair (0.57, 0.43): mass before 0.43 is 0.57 >= 0.5 -> 1 kept
    assert keep_mask(logits, 2, 0.5).tolist() == [[False, True, False, False, False]]
    # ties at the k-th value stay
    tied = torch.tensor([[1.0, 2.0, 2.0, 0.0]])
    assert keep_mask(tied, 1, 1.0).tolist() == [[False, True, True, False]]
    # the most probable token is always kept, whatever top_p
    assert keep_mask(logits, 0, 1e-9).tolist() == [[False, True, False, False, False]]


def test_filter_logits_is_keep_mask_with_minus_inf():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 50, generator=g)
    for k, p, temp in ((0, 0.5, 1.0), (5, 1.0, 0.7), (7, 0.8, 1.3), (0, 1.0, 2.0)):
        got = filter_logits_(logits.clone(), temp, k, p)
        keep = keep_mask(logits / temp, k, p)
        assert torch.equal(got > -math.inf, keep)
        torch.testing.assert_close(got[keep], (logits / temp)[keep])


def test_filtering_active():
    assert not filtering_active(10, 0, 1.0)
    assert not filtering_active(10, 10, 1.0)
    assert filtering_active(10, 9, 1.0) and filtering_active(10, 0, 0.99)


def test_bad_arguments():
    with pytest.raises(ValueError, match="top_p must be in"):
        keep_mask(torch.zeros(1, 3), 0, 0.0)
    with pytest.raises(ValueError, match="top_k must be >= 0"):
        keep_mask(torch.zeros(1, 3), -1, 1.0)
