from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rlvr.rollout.sampling import filter_logits_, sample_next, stream_keys, stream_uniforms

NEG_INF = float("-inf")


def reference_filter(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Slow per-row loop straight from the definitions (temperature, then top-k, then top-p)."""
    rows = []
    for row in (logits.double() / temperature).tolist():
        order = sorted(range(len(row)), key=lambda v: -row[v])
        if top_k:
            kth = row[order[top_k - 1]]
            row = [x if x >= kth else NEG_INF for x in row]
        if top_p < 1:
            top = max(row)
            total = sum(math.exp(x - top) for x in row)
            mass = 0.0
            for rank, v in enumerate(order):
                p = math.exp(row[v] - top) / total
                if rank > 0 and mass >= top_p:
                    row[v] = NEG_INF
                mass += p
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


def test_stream_uniforms_depend_only_on_seed_stream_and_step():
    keys = stream_keys(7, np.arange(5))
    a = stream_uniforms(keys, 3)
    assert np.array_equal(a, stream_uniforms(stream_keys(7, np.arange(5)), 3))
    # stream 3 alone draws the same as stream 3 among others: batch composition does not matter
    assert stream_uniforms(stream_keys(7, [3]), 3)[0] == a[3]
    assert not np.array_equal(a, stream_uniforms(keys, 4))
    assert not np.array_equal(a, stream_uniforms(stream_keys(8, np.arange(5)), 3))
    assert len(set(a.tolist())) == 5
    assert a.dtype == np.float64 and (a >= 0).all() and (a < 1).all()


def test_stream_uniforms_are_uniform():
    # 20k draws over steps and streams: each decile holds 10% within 5 standard errors, and
    # consecutive draws of one stream are uncorrelated.
    keys = stream_keys(0, np.arange(200))
    u = np.stack([stream_uniforms(keys, t) for t in range(100)])  # [steps, streams]
    counts = np.histogram(u, bins=10, range=(0, 1))[0] / u.size
    assert np.abs(counts - 0.1).max() < 5 * math.sqrt(0.1 * 0.9 / u.size)
    corr = np.corrcoef(u[:-1].ravel(), u[1:].ravel())[0, 1]
    assert abs(corr) < 5 / math.sqrt(u.size)
    assert stream_keys(-1, [0]).dtype == np.uint64  # negative seeds are fine


def test_top_p_by_hand():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = filter_logits_(probs.log(), 1.0, 0, 0.75) > NEG_INF
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 + 0.3 reaches 0.75
    kept = filter_logits_(probs.log(), 1.0, 0, 0.85) > NEG_INF
    assert kept.tolist() == [[True, True, True, False]]
    kept = filter_logits_(probs.log(), 1.0, 0, 0.1) > NEG_INF
    assert kept.tolist() == [[True, False, False, False]]  # the top token always stays


def test_top_k_keeps_ties_at_the_boundary():
    logits = torch.tensor([[1.0, 3.0, 2.0, 2.0, 0.0]])
    assert (filter_logits_(logits.clone(), 1.0, 2, 1.0) > NEG_INF).tolist() == [[False, True, True, True, False]]
    assert (filter_logits_(logits.clone(), 1.0, 1, 1.0) > NEG_INF).tolist() == [[False, True, False, False, False]]


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.3, 5, 1.0), (0.8, 0, 0.9), (0.6, 7, 0.8)])
def test_filter_matches_reference_loop(temperature, top_k, top_p):
    logits = torch.randn(6, 40, generator=torch.Generator().manual_seed(1)) * 2
    got = filter_logits_(logits.clone(), temperature, top_k, top_p)
    want = reference_filter(logits, temperature, top_k, top_p)
    assert torch.equal(got == NEG_INF, want == NEG_INF)
    finite = want > NEG_INF
    torch.testing.assert_close(got[finite].double(), want[finite], rtol=0, atol=1e-6)


def test_sample_next_logprob_by_hand():
    # top-k 2 of (0.5, 0.3, 0.15, 0.05): renormalised (0.625, 0.375); u below 0.625 draws token 0.
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log().repeat(2, 1)
    tokens, lps = sample_next(logits, torch.tensor([0.6, 0.7], dtype=torch.float64), temperature=1.0, top_k=2, top_p=1.0)
    assert tokens.tolist() == [0, 1]
    torch.testing.assert_close(lps, torch.tensor([math.log(0.625), math.log(0.375)]), rtol=0, atol=1e-6)


def test_sample_next_edges_of_the_uniform_never_pick_removed_tokens():
    logits = torch.tensor([[NEG_INF, 0.0, 1.0, NEG_INF], [2.0, NEG_INF, NEG_INF, 0.5]])
    for u in (0.0, 1.0 - 2**-53):
        tokens, lps = sample_next(logits.clone(), torch.full((2,), u, dtype=torch.float64), temperature=1.0, top_k=0, top_p=1.0)
        assert tokens.tolist() == ([1, 0] if u == 0 else [2, 3])
        assert torch.isfinite(lps).all()


def test_greedy_reports_untempered_logprob():
    logits = torch.tensor([[0.0, 2.0, 1.0], [5.0, 5.0, 1.0]])
    tokens, lps = sample_next(logits.clone(), torch.zeros(2, dtype=torch.float64), temperature=0.0, top_k=1, top_p=0.5)
    assert tokens.tolist() == [1, 0]  # ties: the first index, like torch.argmax in generate
    torch.testing.assert_close(lps, torch.log_softmax(logits, -1)[[0, 1], [1, 0]])


def test_empirical_frequencies_match_filtered_distribution():
    logits = torch.tensor([1.0, 0.2, -0.5, 2.0, -3.0, 0.0])
    temperature, top_k, top_p = 0.8, 4, 0.95
    probs = torch.softmax(reference_filter(logits[None], temperature, top_k, top_p)[0], 0)
    n = 40_000
    uniforms = torch.from_numpy(stream_uniforms(stream_keys(3, np.arange(n)), 0))
    tokens, lps = sample_next(logits.repeat(n, 1), uniforms, temperature=temperature, top_k=top_k, top_p=top_p)
    freq = torch.bincount(tokens, minlength=6).double() / n
    se = (probs * (1 - probs) / n).sqrt()
    assert ((freq - probs).abs() <= 5 * se + 1e-12).all(), (freq, probs)
    assert (freq[probs == 0] == 0).all()
    torch.testing.assert_close(lps.double(), probs.log()[tokens], rtol=0, atol=1e-6)


@pytest.mark.parametrize("vocab", [5, 1024, 2500])  # tail block only; full blocks only; both
def test_two_level_inverse_cdf_equals_flat_inverse_cdf(vocab):
    from rlvr.rollout.sampling import inverse_cdf

    g = torch.Generator().manual_seed(vocab)
    weights = torch.softmax(torch.randn(300, vocab, generator=g) * 3, -1)
    weights[weights < 1e-4] = 0.0  # zero-weight tokens must never be chosen
    uniforms = torch.rand(300, generator=g, dtype=torch.float64)
    uniforms[:2] = torch.tensor([0.0, 1.0 - 2**-53], dtype=torch.float64)
    got, total = inverse_cdf(weights, uniforms)
    cdf = weights.double().cumsum(-1)
    target = torch.minimum(uniforms * cdf[:, -1], torch.nextafter(cdf[:, -1], torch.zeros(())))
    want = torch.searchsorted(cdf, target[:, None], right=True).squeeze(-1)
    assert torch.equal(got, want)
    assert (weights.gather(-1, got[:, None]) > 0).all()
    torch.testing.assert_close(total, weights.double().sum(-1))
