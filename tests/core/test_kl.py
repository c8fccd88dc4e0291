"""KL estimators and the adaptive KL coefficient."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.core.kl import KL_ESTIMATORS, adaptive_kl_coef, kl_divergence

D = torch.float64


def test_registry_names():
    assert sorted(KL_ESTIMATORS) == ["abs", "k1", "k2", "k3"]


def test_hand_values():
    lp = torch.tensor([[-1.0, -2.0, -0.5]], dtype=D)
    ref = torch.tensor([[-2.0, -1.0, -0.5]], dtype=D)
    # logp - ref = [1, -1, 0]
    assert torch.equal(kl_divergence(lp, ref, "k1"), torch.tensor([[1.0, -1.0, 0.0]], dtype=D))
    assert torch.equal(kl_divergence(lp, ref, "k2"), torch.tensor([[0.5, 0.5, 0.0]], dtype=D))
    assert torch.equal(kl_divergence(lp, ref, "abs"), torch.tensor([[1.0, 1.0, 0.0]], dtype=D))
    # k3 = e^x - x - 1 with x = ref - logp = [-1, 1, 0]: e^-1 + 1 - 1 = e^-1, e - 1 - 1 = e - 2, 0
    want = torch.tensor([[math.exp(-1), math.e - 2, 0.0]], dtype=D)
    assert torch.allclose(kl_divergence(lp, ref, "k3"), want, rtol=1e-15, atol=0)


def test_k3_is_non_negative_and_accurate_near_zero():
    g = torch.Generator().manual_seed(0)
    lp = torch.randn(1000, generator=g) * 10
    ref = torch.randn(1000, generator=g) * 10
    assert (kl_divergence(lp, ref, "k3") >= 0).all()
    # For |x| = 1e-4 the value is x^2 / 2 + x^3 / 6 ~ 5e-9. In float32 the textbook e^x - x - 1 gives 0
    # (e^x rounds to within 1.2e-7 of 1); expm1(x) - x keeps it to ~1e-3 relative (cancellation of
    # two numbers ~1e-4 apart by 5e-9, each exact to ~6e-12).
    x = torch.tensor([1e-4, -1e-4])
    got = kl_divergence(torch.zeros(2), x, "k3")
    want = x.double() ** 2 / 2 + x.double() ** 3 / 6
    assert torch.allclose(got.double(), want, rtol=1e-3, atol=0)


def test_monte_carlo_expectations_match_the_true_kl():
    # p (the policy that samples) and q (the reference) over 5 categories.
    p = torch.tensor([0.30, 0.25, 0.20, 0.15, 0.10], dtype=D)
    q = torch.tensor([0.25, 0.25, 0.25, 0.15, 0.10], dtype=D)
    log_p, log_q = p.log(), q.log()
    true_kl = (p * (log_p - log_q)).sum().item()
    m = 400_000
    samples = torch.multinomial(p, m, replacement=True, generator=torch.Generator().manual_seed(1234))
    lp, ref = log_p[samples], log_q[samples]
    # Exact per-category values of each estimator, to get its exact mean and standard deviation under p.
    # Tolerance: 5 standard errors of the Monte Carlo mean (a false failure has probability < 1e-6).
    for name in ("k1", "k2", "k3"):
        per_category = kl_divergence(log_p, log_q, name)
        mean = (p * per_category).sum().item()
        std = math.sqrt((p * (per_category - mean) ** 2).sum().item())
        mc = kl_divergence(lp, ref, name).mean().item()
        assert abs(mc - mean) < 5 * std / math.sqrt(m), name
        if name in ("k1", "k3"):
            assert mean == pytest.approx(true_kl, rel=1e-12), f"{name} is unbiased"
            assert abs(mc - true_kl) < 5 * std / math.sqrt(m), name
        else:
            # k2 is biased; for q close to p the bias is small (second order): within 5% here.
            assert abs(mean - true_kl) < 0.05 * true_kl
            assert abs(mc - true_kl) < 0.05 * true_kl + 5 * std / math.sqrt(m)
    # k3's lower variance than k1 for nearby distributions is why GRPO uses it.
    var = lambda name: (p * (kl_divergence(log_p, log_q, name) - true_kl) ** 2).sum()  # noqa: E731
    assert var("k3") < var("k1")


def test_gradients_hand_values_and_clamp():
    lp = torch.tensor([-1.0, -2.0], dtype=D, requires_grad=True)
    ref = torch.tensor([-2.0, -1.0], dtype=D)
    (g,) = torch.autograd.grad(kl_divergence(lp, ref, "k3").sum(), lp)
    # d/dlogp [e^(ref - lp) - (ref - lp) - 1] = 1 - e^(ref - lp) = [1 - e^-1, 1 - e]
    assert torch.allclose(g, torch.tensor([1 - math.exp(-1), 1 - math.e], dtype=D), rtol=1e-15, atol=0)
    (g,) = torch.autograd.grad(kl_divergence(lp, ref, "k2").sum(), lp)
    assert torch.equal(g, torch.tensor([1.0, -1.0], dtype=D))  # logp - ref
    # clamp = 0.5 bounds k3 = [e^-1, e - 2] to [0.3679, 0.5]; where the bound is active the gradient is 0.
    kl = kl_divergence(lp, ref, "k3", clamp=0.5)
    (g,) = torch.autograd.grad(kl.sum(), lp)
    assert torch.allclose(kl.detach(), torch.tensor([math.exp(-1), 0.5], dtype=D))
    assert g[1] == 0 and g[0] == pytest.approx(1 - math.exp(-1))
    # k1 clamps from below too.
    assert kl_divergence(lp, ref, "k1", clamp=0.5).tolist() == [0.5, -0.5]


@pytest.mark.parametrize("name", ["k1", "k2", "k3", "abs"])
def test_loss_mask_keeps_masked_inf_out_of_values_and_gradients(name):
    lp = torch.tensor([[-1.0, -math.inf, math.nan]], dtype=D, requires_grad=True)
    ref = torch.tensor([[-2.0, -3.0, -math.inf]], dtype=D)
    mask = torch.tensor([[True, False, False]])
    kl = kl_divergence(lp, ref, name, loss_mask=mask)
    (g,) = torch.autograd.grad(kl.sum(), lp)
    clean = kl_divergence(lp[:, :1].detach(), ref[:, :1], name)
    assert kl[0, 0].item() == clean.item() and (kl[0, 1:] == 0).all()
    assert torch.isfinite(g).all() and (g[0, 1:] == 0).all()


@pytest.mark.parametrize("name", ["k1", "k2", "k3", "abs"])
def test_matches_slow_reference(name):
    formulas = {
        "k1": lambda a, b: a - b,
        "k2": lambda a, b: 0.5 * (a - b) ** 2,
        "k3": lambda a, b: math.exp(b - a) - (b - a) - 1,
        "abs": lambda a, b: abs(a - b),
    }
    g = torch.Generator().manual_seed(3)
    lp, ref = -torch.rand(4, 6, generator=g, dtype=D) * 4, -torch.rand(4, 6, generator=g, dtype=D) * 4
    got = kl_divergence(lp, ref, name)
    for i in range(4):
        for j in range(6):
            assert got[i, j].item() == pytest.approx(formulas[name](lp[i, j].item(), ref[i, j].item()), rel=1e-12, abs=1e-15)


def test_kl_errors():
    x = torch.zeros(2, 3)
    with pytest.raises(KeyError, match=r"unknown KL estimator 'k4'; known: k1, k2, k3, abs"):
        kl_divergence(x, x, "k4")
    with pytest.raises(ValueError, match=r"logprobs \[2, 3\], ref_logprobs \[2, 2\]"):
        kl_divergence(x, x[:, :2], "k1")
    with pytest.raises(ValueError, match=r"clamp must be > 0"):
        kl_divergence(x, x, "k3", clamp=0.0)


def test_adaptive_kl_coef_hand_values():
    # observed 0.15 vs target 0.1: error = clip(0.5, -0.2, 0.2) = 0.2; coef = 0.1 (1 + 0.2 * 256 / 10000)
    assert adaptive_kl_coef(0.1, 0.15, 0.1, 10000, 256) == pytest.approx(0.1 * (1 + 0.2 * 0.0256), rel=1e-15)
    # observed 0.09: error = -0.1; coef = 0.1 (1 - 0.1 * 0.0256)
    assert adaptive_kl_coef(0.1, 0.09, 0.1, 10000, 256) == pytest.approx(0.1 * (1 - 0.1 * 0.0256), rel=1e-15)
    # observed 0: error clipped at -0.2
    assert adaptive_kl_coef(0.1, 0.0, 0.1, 100, 50) == pytest.approx(0.1 * (1 - 0.2 * 0.5), rel=1e-15)
    # on target: unchanged
    assert adaptive_kl_coef(0.3, 0.1, 0.1, 100, 50) == pytest.approx(0.3, rel=1e-15)
    assert isinstance(adaptive_kl_coef(0.1, torch.tensor(0.2).item(), 0.1, 10, 1), float)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0.1, 0.1, 0.0, 100, 1), r"target_kl must be > 0"),
        ((0.1, 0.1, 0.1, 0, 1), r"horizon must be > 0"),
        ((0.1, 0.1, 0.1, 100, -1), r"n_steps must be >= 0"),
        ((-0.1, 0.1, 0.1, 100, 1), r"coef must be >= 0"),
    ],
)
def test_adaptive_kl_coef_errors(args, message):
    with pytest.raises(ValueError, match=message):
        adaptive_kl_coef(*args)
