"""Policy losses, value loss and SFT loss: hand values, invariants, slow references, errors."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.core.aggregation import aggregate
from rlvr.core.losses import POLICY_LOSSES, policy_loss, sft_loss, value_loss

D = torch.float64
# clip_cov's random selection depends on the layout of the batch; selecting every eligible token
# (fraction 1) makes it deterministic wherever layout-invariance is tested.
DETERMINISTIC = {"clip_cov": {"clip_cov_ratio": 1.0}}


def t(rows):
    return torch.tensor(rows, dtype=D)


def run(name, lp, old, adv, mask, **params):
    lp = lp.clone().requires_grad_(True)
    loss, metrics = policy_loss(name, logprobs=lp, old_logprobs=old, advantages=adv, loss_mask=mask, **params)
    (grad,) = torch.autograd.grad(loss.sum(), lp, allow_unused=True)
    return loss.detach(), (torch.zeros_like(lp) if grad is None else grad), metrics


def random_batch(n=5, length=7, seed=0, spread=0.3):
    g = torch.Generator().manual_seed(seed)
    lp = -torch.rand(n, length, generator=g, dtype=D) * 3
    old = lp + spread * torch.randn(n, length, generator=g, dtype=D)
    adv = torch.randn(n, 1, generator=g, dtype=D).expand(n, length) + 0.1 * torch.randn(n, length, generator=g, dtype=D)
    lengths = torch.randint(1, length + 1, (n,), generator=g)
    mask = torch.arange(length)[None, :] < lengths[:, None]
    return lp, old, adv, mask


# --- hand values ------------------------------------------------------------------------------------


def test_pg_hand_values():
    lp, old, adv = t([[-1.0, -2.0]]), t([[-5.0, 0.0]]), t([[2.0, -1.0]])
    loss, grad, m = run("pg", lp, old, adv, torch.ones(1, 2, dtype=torch.bool))
    # -A logp: -(2)(-1) = 2 and -(-1)(-2) = -2; gradient -A = [-2, 1]; old only feeds the metrics.
    assert torch.equal(loss, t([[2.0, -2.0]]))
    assert torch.equal(grad, t([[-2.0, 1.0]]))
    assert m["clip_frac_low"] == 0 and m["clip_frac_high"] == 0
    # ratio_mean: (e^4 + e^-2) / 2; approx_kl: mean of e^x - 1 - x at x = 4 and -2.
    assert m["ratio_mean"].item() == pytest.approx((math.exp(4) + math.exp(-2)) / 2, rel=1e-12)
    k3 = lambda x: math.exp(x) - 1 - x  # noqa: E731
    assert m["approx_kl"].item() == pytest.approx((k3(4.0) + k3(-2.0)) / 2, rel=1e-12)


# Six tokens, old_logp = 0 so that logp = log r.
PPO_R = [1.5, 0.5, 1.1, 0.5, 1.5, 4.0]
PPO_A = [1.0, -1.0, 2.0, 1.0, -1.0, -1.0]


def test_ppo_clip_hand_values_and_clip_fractions():
    lp, old, adv = t([[math.log(r) for r in PPO_R]]), torch.zeros(1, 6, dtype=D), t([PPO_A])
    loss, grad, m = run("ppo_clip", lp, old, adv, torch.ones(1, 6, dtype=torch.bool))
    # r=1.5, A=1:  max(-1.5, -1.2) = -1.2   upper clip active, gradient 0
    # r=0.5, A=-1: max(0.5, 0.8)   =  0.8   lower clip active, gradient 0
    # r=1.1, A=2:  max(-2.2, -2.2) = -2.2   inside, gradient -A r = -2.2
    # r=0.5, A=1:  max(-0.5, -0.8) = -0.5   below the range but A > 0: unclipped, gradient -0.5
    # r=1.5, A=-1: max(1.5, 1.2)   =  1.5   above the range but A < 0: unclipped, gradient 1.5
    # r=4,   A=-1: max(4, 1.2)     =  4     unclipped, gradient 4
    assert torch.allclose(loss, t([[-1.2, 0.8, -2.2, -0.5, 1.5, 4.0]]), rtol=0, atol=1e-12)
    assert torch.allclose(grad, t([[0.0, 0.0, -2.2, -0.5, 1.5, 4.0]]), rtol=0, atol=1e-12)
    assert m["clip_frac_high"].item() == pytest.approx(1 / 6, abs=1e-12)
    assert m["clip_frac_low"].item() == pytest.approx(1 / 6, abs=1e-12)
    assert "clip_frac_dual" not in m

    # Dual clip c = 3: only the last token (A < 0, r = 4 > 3) changes: min(4, -A c = 3) = 3, gradient 0.
    loss, grad, m = run("ppo_clip", lp, old, adv, torch.ones(1, 6, dtype=torch.bool), clip_c=3.0)
    assert torch.allclose(loss, t([[-1.2, 0.8, -2.2, -0.5, 1.5, 3.0]]), rtol=0, atol=1e-12)
    assert torch.allclose(grad, t([[0.0, 0.0, -2.2, -0.5, 1.5, 0.0]]), rtol=0, atol=1e-12)
    assert m["clip_frac_dual"].item() == pytest.approx(1 / 6, abs=1e-12)


def test_ppo_clip_higher_dapo():
    lp, old, adv = t([[math.log(1.25)]]), torch.zeros(1, 1, dtype=D), t([[1.0]])
    mask = torch.ones(1, 1, dtype=torch.bool)
    # Symmetric 0.2: r = 1.25 > 1.2 is clipped to -1.2. DAPO's clip_high = 0.28: 1.25 < 1.28, kept.
    loss, _, m = run("ppo_clip", lp, old, adv, mask)
    assert loss.item() == pytest.approx(-1.2, abs=1e-12) and m["clip_frac_high"] == 1
    loss, grad, m = run("ppo_clip", lp, old, adv, mask, clip_low=0.2, clip_high=0.28)
    assert loss.item() == pytest.approx(-1.25, abs=1e-12) and m["clip_frac_high"] == 0
    assert grad.item() == pytest.approx(-1.25, abs=1e-12)


def test_gspo_hand_values():
    # row 0: log r = [0.1, 0.3] -> s = e^0.2 = 1.2214 > 1 + 4e-4, A = 1 > 0: clipped, loss -(1 + 4e-4), grad 0
    # row 1: log r = [1e-4, -1e-4, (pad)] -> s = e^0 = 1, A = -2: loss -A s = 2, grad -A s = 2
    # row 2: log r = [-0.01, -0.01] -> s = e^-0.01 = 0.99005 < 1 - 3e-4, A = -1 < 0: clipped to 1 - 3e-4
    lp = t([[-1.0, -1.0], [-2.0, -2.0], [-0.5, -0.5]])
    old = lp - t([[0.1, 0.3], [1e-4, -1e-4], [-0.01, -0.01]])
    adv = t([[1.0, 1.0], [-2.0, -2.0], [-1.0, -1.0]])
    mask = torch.tensor([[True, True], [True, True], [True, True]])
    loss, grad, m = run("gspo", lp, old, adv, mask)
    expected = t([[-(1 + 4e-4)] * 2, [2.0, 2.0], [1 - 3e-4] * 2])
    assert torch.allclose(loss, expected, rtol=0, atol=1e-12)
    assert torch.allclose(grad, t([[0.0, 0.0], [2.0, 2.0], [0.0, 0.0]]), rtol=0, atol=1e-12)
    assert m["clip_frac_high"].item() == pytest.approx(2 / 6, abs=1e-12)
    assert m["clip_frac_low"].item() == pytest.approx(2 / 6, abs=1e-12)
    assert m["seq_ratio_mean"].item() == pytest.approx((math.exp(0.2) + 1 + math.exp(-0.01)) / 3, rel=1e-12)


def test_gspo_gradient_equals_sequence_level_objective():
    lp, old, adv, mask = random_batch(n=6, length=9, seed=3, spread=0.05)
    adv = adv[:, :1].expand_as(adv)  # one advantage per sequence
    clip_low, clip_high = 0.01, 0.015  # wide enough that some rows are clipped and some are not
    loss, grad_token, _ = run("gspo", lp, old, adv, mask, clip_low=clip_low, clip_high=clip_high)
    # Gradient of the token form under seq_mean_token_mean:
    lp_leaf = lp.clone().requires_grad_(True)
    per_token, _ = policy_loss(
        "gspo", logprobs=lp_leaf, old_logprobs=old, advantages=adv, loss_mask=mask,
        clip_low=clip_low, clip_high=clip_high,
    )
    (g_token,) = torch.autograd.grad(aggregate(per_token, mask, "seq_mean_token_mean"), lp_leaf)

    # Sequence-level GSPO: -(1/G) sum_i min(s_i A_i, clip(s_i) A_i), s_i = exp(mean_t log r).
    lp_seq = lp.clone().requires_grad_(True)
    log_r = torch.where(mask, lp_seq - old, 0.0)
    s = torch.exp(log_r.sum(1) / mask.sum(1))
    a = adv[:, 0]
    objective = torch.minimum(s * a, s.clamp(1 - clip_low, 1 + clip_high) * a).mean()
    (g_seq,) = torch.autograd.grad(-objective, lp_seq)

    clipped_rows = ((a > 0) & (s > 1 + clip_high)) | ((a < 0) & (s < 1 - clip_low))
    assert 0 < clipped_rows.sum() < len(a), "the example must mix clipped and unclipped sequences"
    assert torch.allclose(g_token, g_seq, rtol=0, atol=1e-14)


def test_cispo_hand_values():
    # logp = -1 everywhere, ratios r = [1.5, 6, 0.1], A = [1, 1, -1]; default: no lower bound, upper 5.
    lp = t([[-1.0, -1.0, -1.0]])
    old = lp - t([[math.log(1.5), math.log(6.0), math.log(0.1)]])
    adv = t([[1.0, 1.0, -1.0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    loss, grad, m = run("cispo", lp, old, adv, mask)
    # weights [1.5, 5, 0.1]; loss -w A logp = [1.5, 5, -0.1]; gradient -w A = [-1.5, -5, 0.1]
    assert torch.allclose(loss, t([[1.5, 5.0, -0.1]]), rtol=0, atol=1e-12)
    assert torch.allclose(grad, t([[-1.5, -5.0, 0.1]]), rtol=0, atol=1e-12)
    assert m["clip_frac_high"].item() == pytest.approx(1 / 3) and m["clip_frac_low"] == 0
    # With clip_low = 0.5 the last weight becomes 0.5: loss -0.5, gradient 0.5 (never 0, unlike PPO).
    loss, grad, m = run("cispo", lp, old, adv, mask, clip_low=0.5)
    assert torch.allclose(loss, t([[1.5, 5.0, -0.5]]), rtol=0, atol=1e-12)
    assert torch.allclose(grad, t([[-1.5, -5.0, 0.5]]), rtol=0, atol=1e-12)
    assert m["clip_frac_low"].item() == pytest.approx(1 / 3)


def cov_example():
    # A = [3, 1, -1, -3] (mean 0); logp = [-1, -2, -3, -4] (mean -2.5) -> centred [1.5, .5, -.5, -1.5]
    # cov = [4.5, 0.5, 0.5, 4.5]: with the default bounds (1, 5) tokens 0 and 3 are eligible.
    lp, adv = t([[-1.0, -2.0, -3.0, -4.0]]), t([[3.0, 1.0, -1.0, -3.0]])
    return lp, adv, torch.ones(1, 4, dtype=torch.bool)


def test_clip_cov_hand_values():
    lp, adv, mask = cov_example()
    # old = logp: r = 1, the PPO loss is -A = [-3, -1, 1, 3] with gradient -A.
    loss, grad, m = run("clip_cov", lp, lp, adv, mask, clip_cov_ratio=1.0)
    # count = max(floor(1.0 * 4), 1) = 4 >= 2 eligible: both eligible tokens are cut (loss 0, grad 0).
    assert torch.equal(loss, t([[0.0, -1.0, 1.0, 0.0]]))
    assert torch.equal(grad, t([[0.0, -1.0, 1.0, 0.0]]))
    assert m["clip_cov_frac"].item() == pytest.approx(0.5)

    # count = max(floor(0.25 * 4), 1) = 1: exactly one of tokens 0 and 3.
    loss, _, m = run("clip_cov", lp, lp, adv, mask, clip_cov_ratio=0.25, generator=torch.Generator().manual_seed(0))
    cut = (loss == 0) & (lp != 0)
    assert cut.sum() == 1 and (cut[0, 0] or cut[0, 3]) and m["clip_cov_frac"].item() == pytest.approx(0.25)

    # Token 0 already clipped by PPO (A = 3 > 0, r = 2.5 > 1 + clip_high = 2): no longer eligible, so
    # only token 3 is cut; token 0 keeps its clipped loss -A (1 + 1) = -6.
    old = lp - t([[math.log(2.5), 0.0, 0.0, 0.0]])
    loss, _, m = run("clip_cov", lp, old, adv, mask, clip_cov_ratio=1.0)
    assert torch.allclose(loss, t([[-6.0, -1.0, 1.0, 0.0]]), rtol=0, atol=1e-12)
    assert m["clip_frac_high"].item() == pytest.approx(0.25) and m["clip_cov_frac"].item() == pytest.approx(0.25)

    # Upper bound 4 < 4.5: nothing is eligible, the loss is plain PPO.
    loss, _, m = run("clip_cov", lp, lp, adv, mask, clip_cov_ratio=1.0, clip_cov_ub=4.0)
    assert torch.equal(loss, -adv) and m["clip_cov_frac"] == 0


def test_clip_cov_random_subset_is_seeded_and_uniform():
    lp, adv, mask = cov_example()
    picks = []
    for seed in range(200):
        loss, _, _ = run("clip_cov", lp, lp, adv, mask, clip_cov_ratio=0.25, generator=torch.Generator().manual_seed(seed))
        picks.append(0 if loss[0, 0] == 0 else 3)
        again, _, _ = run("clip_cov", lp, lp, adv, mask, clip_cov_ratio=0.25, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(loss, again)
    # Binomial(200, 1/2): 60..140 holds with probability 1 - 1e-8; a biased pick (always the first
    # eligible token, say) fails it.
    assert 60 <= picks.count(0) <= 140


def test_kl_cov_hand_values():
    # A = [3, 1, -1, -3] (mean 0); logp = [-1, -2, -3, -5] (mean -2.75) -> centred [1.75, .75, -.25, -2.25]
    # cov = [5.25, 0.75, 0.25, 6.75]; log r = [0, 0, 0, -0.5].
    lp, adv = t([[-1.0, -2.0, -3.0, -5.0]]), t([[3.0, 1.0, -1.0, -3.0]])
    old = lp - t([[0.0, 0.0, 0.0, -0.5]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    base = t([[-3.0, -1.0, 1.0, 3.0 * math.exp(-0.5)]])  # -A r
    # k = max(floor(0.25 * 4), 1) = 1: token 3 (cov 6.75) gets + 1.0 * |-0.5|.
    loss, grad, m = run("kl_cov", lp, old, adv, mask, kl_cov_ratio=0.25)
    assert torch.allclose(loss, base + t([[0.0, 0.0, 0.0, 0.5]]), rtol=0, atol=1e-12)
    # gradient of -A r is -A r; of |log r| at log r = -0.5 it is -1.
    assert torch.allclose(grad, t([[-3.0, -1.0, 1.0, 3.0 * math.exp(-0.5) - 1.0]]), rtol=0, atol=1e-12)
    assert m["kl_cov_frac"].item() == pytest.approx(0.25) and m["abs_kl"].item() == pytest.approx(0.125)
    # k = 2: tokens 3 and 0 (cov 5.25); token 0 has log r = 0, so its penalty (and its gradient) is 0.
    loss, _, m = run("kl_cov", lp, old, adv, mask, kl_cov_ratio=0.5, kl_cov_coef=2.0)
    assert torch.allclose(loss, base + t([[0.0, 0.0, 0.0, 1.0]]), rtol=0, atol=1e-12)
    assert m["kl_cov_frac"].item() == pytest.approx(0.5)
    # A tiny fraction still selects one token.
    _, _, m = run("kl_cov", lp, old, adv, mask, kl_cov_ratio=1e-9)
    assert m["kl_cov_frac"].item() == pytest.approx(0.25)


# --- invariants for every registered loss -----------------------------------------------------------


@pytest.mark.parametrize("name", ["ppo_clip", "gspo", "cispo", "kl_cov", "clip_cov"])
def test_gradient_equals_pg_at_ratio_one(name):
    lp, _, adv, mask = random_batch(seed=1)
    params = {"clip_cov_lb": 1e8, "clip_cov_ub": 1e9} if name == "clip_cov" else {}  # nothing eligible
    _, g_pg, _ = run("pg", lp, lp, adv, mask)
    _, g, m = run(name, lp, lp, adv, mask, **params)
    assert torch.allclose(g, g_pg, rtol=0, atol=1e-14)
    assert m["clip_frac_low"] == 0 and m["clip_frac_high"] == 0
    assert m["ratio_mean"].item() == pytest.approx(1.0) and m["approx_kl"] == 0


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_masked_padding_changes_nothing(name):
    lp, old, adv, mask = random_batch(seed=2)
    params = DETERMINISTIC.get(name, {})
    loss, grad, m = run(name, lp, old, adv, mask, **params)
    # Two padding columns and one padding row, holding garbage that must not matter.
    pad = lambda x, v: torch.cat([torch.cat([x, torch.full((x.shape[0], 2), v, dtype=D)], 1),  # noqa: E731
                                  torch.full((1, x.shape[1] + 2), v, dtype=D)], 0)
    mask_p = torch.zeros(mask.shape[0] + 1, mask.shape[1] + 2, dtype=torch.bool)
    mask_p[: mask.shape[0], : mask.shape[1]] = mask
    loss_p, grad_p, m_p = run(name, pad(lp, -7.0), pad(old, 3.0), pad(adv, 5.0), mask_p, **params)
    assert torch.allclose(loss_p[: mask.shape[0], : mask.shape[1]], loss, rtol=0, atol=1e-14)
    assert torch.allclose(grad_p[: mask.shape[0], : mask.shape[1]], grad, rtol=0, atol=1e-14)
    assert (loss_p[~mask_p] == 0).all() and (grad_p[~mask_p] == 0).all()
    assert m.keys() == m_p.keys()
    for key in m:
        assert m_p[key].item() == pytest.approx(m[key].item(), abs=1e-14), key


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_masked_inf_nan_do_not_leak(name):
    lp, old, adv, mask = random_batch(seed=4)
    params = DETERMINISTIC.get(name, {})
    loss, grad, m = run(name, lp, old, adv, mask, **params)
    bad = ~mask
    dirty = lambda x, v: torch.where(bad, torch.full_like(x, v), x)  # noqa: E731
    loss_d, grad_d, m_d = run(name, dirty(lp, -math.inf), dirty(old, math.nan), dirty(adv, math.inf), mask, **params)
    assert torch.equal(loss_d, loss) and torch.equal(grad_d, grad)
    for key in m:
        assert torch.equal(m_d[key], m[key]), key


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_all_false_mask_gives_zero_loss_and_gradient(name):
    lp, old, adv, _ = random_batch(seed=5)
    mask = torch.zeros_like(lp, dtype=torch.bool)
    loss, grad, m = run(name, lp, old, adv, mask)
    assert (loss == 0).all() and (grad == 0).all()
    assert all(v == 0 for v in m.values())
    for mode in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm"):
        lp_leaf = lp.clone().requires_grad_(True)
        per_token, _ = policy_loss(name, logprobs=lp_leaf, old_logprobs=old, advantages=adv, loss_mask=mask)
        scalar = aggregate(per_token, mask, mode)
        (g,) = torch.autograd.grad(scalar, lp_leaf, allow_unused=True)
        assert scalar.item() == 0 and (g is None or (g == 0).all())


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_metrics_are_detached_scalars(name):
    lp, old, adv, mask = random_batch(seed=6)
    _, metrics = policy_loss(name, logprobs=lp.requires_grad_(True), old_logprobs=old, advantages=adv, loss_mask=mask)
    assert {"clip_frac_low", "clip_frac_high", "approx_kl", "ratio_mean"} <= metrics.keys()
    for value in metrics.values():
        assert value.dim() == 0 and not value.requires_grad


# --- slow reference loops ---------------------------------------------------------------------------


def reference(name, lp, old, adv, mask, **p):
    """Element-by-element Python version of each loss (loss values only)."""
    n, length = lp.shape
    out = [[0.0] * length for _ in range(n)]
    valid = [(i, j) for i in range(n) for j in range(length) if mask[i, j]]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    if name in ("clip_cov", "kl_cov"):
        mean_a = mean([adv[i, j].item() for i, j in valid])
        mean_lp = mean([lp[i, j].item() for i, j in valid])
        cov = {(i, j): (adv[i, j].item() - mean_a) * (lp[i, j].item() - mean_lp) for i, j in valid}
    if name == "kl_cov":
        k = max(math.floor(len(valid) * p["kl_cov_ratio"]), 1)
        chosen = set(sorted(valid, key=lambda ij: -cov[ij])[:k])
    for i in range(n):
        cols = [j for j in range(length) if mask[i, j]]
        if not cols:
            continue
        seq_r = math.exp(mean([lp[i, j].item() - old[i, j].item() for j in cols]))
        for j in cols:
            a, x, x_old = adv[i, j].item(), lp[i, j].item(), old[i, j].item()
            r = math.exp(x - x_old)
            if name == "pg":
                out[i][j] = -a * x
            elif name in ("ppo_clip", "clip_cov", "gspo"):
                lo, hi = p.get("clip_low", 0.2), p.get("clip_high", 0.2)
                rr = seq_r if name == "gspo" else r
                value = max(-a * rr, -a * min(max(rr, 1 - lo), 1 + hi))
                if p.get("clip_c") is not None and a < 0:
                    value = min(value, -a * p["clip_c"])
                clipped = (a > 0 and rr > 1 + hi) or (a < 0 and rr < 1 - lo)
                if name == "clip_cov" and not clipped and p["clip_cov_lb"] < cov[i, j] < p["clip_cov_ub"]:
                    value = 0.0  # fraction 1.0: every eligible token is selected
                out[i][j] = value
            elif name == "cispo":
                w = min(r, 1 + p["clip_high"])
                if p.get("clip_low") is not None:
                    w = max(w, 1 - p["clip_low"])
                out[i][j] = -w * a * x
            elif name == "kl_cov":
                out[i][j] = -a * r + (p["kl_cov_coef"] * abs(x - x_old) if (i, j) in chosen else 0.0)
    return t(out)


REFERENCE_CASES = [
    ("pg", {}),
    ("ppo_clip", {"clip_low": 0.2, "clip_high": 0.28}),
    ("ppo_clip", {"clip_low": 0.1, "clip_high": 0.1, "clip_c": 1.5}),
    ("gspo", {"clip_low": 0.05, "clip_high": 0.08}),
    ("cispo", {"clip_low": None, "clip_high": 0.3}),
    ("cispo", {"clip_low": 0.2, "clip_high": 0.3}),
    ("clip_cov", {"clip_low": 0.2, "clip_high": 0.2, "clip_cov_ratio": 1.0, "clip_cov_lb": 0.05, "clip_cov_ub": 0.6}),
    ("kl_cov", {"kl_cov_ratio": 0.2, "kl_cov_coef": 0.7}),
]


@pytest.mark.parametrize(("name", "params"), REFERENCE_CASES)
def test_matches_slow_reference(name, params):
    for seed in range(3):
        lp, old, adv, mask = random_batch(n=6, length=8, seed=10 + seed, spread=0.4)
        loss, _, _ = run(name, lp, old, adv, mask, **params)
        assert torch.allclose(loss, reference(name, lp, old, adv, mask, **params), rtol=1e-12, atol=1e-12)


def test_clip_cov_random_selection_matches_count_and_eligibility():
    lp, old, adv, mask = random_batch(n=8, length=10, seed=7, spread=0.4)
    params = {"clip_low": 0.2, "clip_high": 0.2, "clip_cov_lb": 0.01, "clip_cov_ub": 0.8}
    full = reference("clip_cov", lp, old, adv, mask, clip_cov_ratio=1.0, **params)
    ppo = reference("ppo_clip", lp, old, adv, mask, clip_low=0.2, clip_high=0.2)
    differs = lambda x, y: (x - y).abs() > 1e-12  # noqa: E731
    eligible = mask & differs(full, ppo)
    n_valid, n_eligible = int(mask.sum()), int(eligible.sum())
    assert n_eligible >= 5
    loss, _, m = run("clip_cov", lp, old, adv, mask, clip_cov_ratio=0.05, generator=torch.Generator().manual_seed(1), **params)
    cut = mask & differs(loss, ppo)
    k = min(n_eligible, max(math.floor(0.05 * n_valid), 1))
    assert int(cut.sum()) == k and not (cut & ~eligible).any() and (loss[cut] == 0).all()
    assert m["clip_cov_frac"].item() == pytest.approx(k / n_valid)


# --- errors -----------------------------------------------------------------------------------------


def test_unknown_loss_lists_known_names():
    lp, old, adv, mask = random_batch()
    with pytest.raises(KeyError, match=r"unknown policy loss 'ppo'; known: pg, ppo_clip, gspo, cispo, clip_cov, kl_cov"):
        policy_loss("ppo", logprobs=lp, old_logprobs=old, advantages=adv, loss_mask=mask)


def test_unknown_option_lists_accepted_options():
    lp, old, adv, mask = random_batch()
    with pytest.raises(TypeError, match=r"'ppo_clip' does not take clip_ratio; it takes: clip_low, clip_high, clip_c"):
        policy_loss("ppo_clip", logprobs=lp, old_logprobs=old, advantages=adv, loss_mask=mask, clip_ratio=0.2)
    with pytest.raises(TypeError, match=r"'pg' does not take clip_low; it takes: no options"):
        policy_loss("pg", logprobs=lp, old_logprobs=old, advantages=adv, loss_mask=mask, clip_low=0.2)


def test_shape_mismatch_names_the_shapes():
    lp, old, adv, mask = random_batch(n=5, length=7)
    with pytest.raises(ValueError, match=r"advantages \[5, 1\]"):
        policy_loss("pg", logprobs=lp, old_logprobs=old, advantages=adv[:, :1], loss_mask=mask)
    with pytest.raises(ValueError, match=r"\[N, T\] tensors, got shape \[35\]"):
        policy_loss("pg", logprobs=lp.flatten(), old_logprobs=old.flatten(), advantages=adv.flatten(), loss_mask=mask.flatten())


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("ppo_clip", {"clip_c": 1.0}, r"clip_c must be > 1"),
        ("ppo_clip", {"clip_low": 1.5}, r"clip_low must be in \[0, 1\]"),
        ("ppo_clip", {"clip_high": -0.1}, r"clip_high must be >= 0"),
        ("gspo", {"clip_low": -1e-4}, r"clip_low must be in \[0, 1\]"),
        ("cispo", {"clip_high": -1.0}, r"clip_high must be >= 0"),
        ("clip_cov", {"clip_cov_ratio": 0.0}, r"clip_cov_ratio must be in \(0, 1\]"),
        ("clip_cov", {"clip_cov_lb": 5.0, "clip_cov_ub": 1.0}, r"clip_cov_lb must be < clip_cov_ub"),
        ("kl_cov", {"kl_cov_ratio": 2.0}, r"kl_cov_ratio must be in \(0, 1\]"),
        ("kl_cov", {"kl_cov_coef": -1.0}, r"kl_cov_coef must be >= 0"),
    ],
)
def test_invalid_parameters_are_rejected(name, params, message):
    lp, old, adv, mask = random_batch()
    with pytest.raises(ValueError, match=message):
        policy_loss(name, logprobs=lp, old_logprobs=old, advantages=adv, loss_mask=mask, **params)


# --- value loss and SFT loss ------------------------------------------------------------------------


def test_value_loss_hand_values():
    values = t([[1.5, 1.1, 0.5, 1.5, 9.0]])
    old_values = t([[1.0, 1.0, 1.0, 1.0, 0.0]])
    returns = t([[2.0, 2.0, 0.0, 3.0, 0.0]])
    mask = torch.tensor([[True, True, True, True, False]])
    v = values.clone().requires_grad_(True)
    loss, m = value_loss(v, old_values, returns, mask, clip_range=0.2)
    (grad,) = torch.autograd.grad(loss.sum(), v)
    # V=1.5, old=1, R=2: (1.5-2)^2 = .25 vs (1.2-2)^2 = .64 -> 0.5 * .64 = .32, clipped term wins (grad 0)
    # V=1.1, old=1, R=2: (1.1-2)^2 = .81 both                  -> .405, gradient V - R = -0.9
    # V=0.5, old=1, R=0: .25 vs (0.8-0)^2 = .64                -> .32, clipped (grad 0)
    # V=1.5, old=1, R=3: 2.25 vs (1.2-3)^2 = 3.24              -> 1.62, clipped (grad 0)
    # masked: 0
    assert torch.allclose(loss, t([[0.32, 0.405, 0.32, 1.62, 0.0]]), rtol=0, atol=1e-12)
    assert torch.allclose(grad, t([[0.0, -0.9, 0.0, 0.0, 0.0]]), rtol=0, atol=1e-12)
    assert m["vf_clip_frac"].item() == pytest.approx(3 / 4)
    loss, m = value_loss(values, old_values, returns, mask, clip_range=None)
    assert torch.allclose(loss, t([[0.125, 0.405, 0.125, 1.125, 0.0]]), rtol=0, atol=1e-12)
    assert m["vf_clip_frac"] == 0


def test_value_loss_matches_slow_reference():
    g = torch.Generator().manual_seed(8)
    values, old_values, returns = (torch.randn(5, 6, generator=g, dtype=D) for _ in range(3))
    mask = torch.rand(5, 6, generator=g) < 0.7
    loss, m = value_loss(values, old_values, returns, mask, clip_range=0.3)
    n_clipped = 0
    for i in range(5):
        for j in range(6):
            v, o, r = values[i, j].item(), old_values[i, j].item(), returns[i, j].item()
            unclipped, clipped = (v - r) ** 2, (o + min(max(v - o, -0.3), 0.3) - r) ** 2
            want = 0.5 * max(unclipped, clipped) if mask[i, j] else 0.0
            n_clipped += bool(mask[i, j]) and clipped > unclipped
            assert loss[i, j].item() == pytest.approx(want, rel=1e-13, abs=1e-15)
    assert m["vf_clip_frac"].item() == pytest.approx(n_clipped / int(mask.sum()))


def test_value_loss_masked_garbage_and_errors():
    mask = torch.tensor([[True, False]])
    v = t([[1.0, math.nan]]).requires_grad_(True)
    loss, m = value_loss(v, t([[1.0, math.inf]]), t([[0.0, -math.inf]]), mask)
    (grad,) = torch.autograd.grad(loss.sum(), v)
    assert torch.equal(loss, t([[0.5, 0.0]])) and torch.equal(grad, t([[1.0, 0.0]]))
    with pytest.raises(ValueError, match=r"clip_range must be > 0 or None"):
        value_loss(v, v, v, mask, clip_range=0.0)
    with pytest.raises(ValueError, match=r"returns \[1, 1\]"):
        value_loss(v, v, v[:, :1], mask)


def test_sft_loss_hand_values():
    lp = t([[-1.0, -2.0, math.nan], [-3.0, -math.inf, 5.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    # token_mean (1 + 2 + 3) / 3 = 2; seq_mean_token_mean (1.5 + 3) / 2 = 2.25;
    # seq_mean_token_sum (3 + 3) / 2 = 3; with constant 4: 3 / 4.
    assert sft_loss(lp, mask).item() == pytest.approx(2.0)
    assert sft_loss(lp, mask, "seq_mean_token_mean").item() == pytest.approx(2.25)
    assert sft_loss(lp, mask, "seq_mean_token_sum").item() == pytest.approx(3.0)
    assert sft_loss(lp, mask, "seq_mean_token_sum_norm", constant=4).item() == pytest.approx(0.75)
    # A micro-batch with the global token count: row 1 alone contributes 3 / 3 = 1.
    assert sft_loss(lp[1:], mask[1:], num_tokens=3).item() == pytest.approx(1.0)
    leaf = lp.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(sft_loss(leaf, mask), leaf)
    assert torch.equal(grad, torch.where(mask, t(-1 / 3), t(0.0)))


@pytest.mark.parametrize("name, params", [
    ("kl_cov", {"kl_cov_ratio": 0.1}),
    ("clip_cov", {"clip_cov_ratio": 0.1, "clip_cov_lb": -1e9, "clip_cov_ub": 1e9}),
])
def test_covariance_selection_over_the_batch_makes_micro_batches_add_up(name, params):
    """Guards a bug: with the selection made once over the whole batch and passed to each
    micro-batch as `selected`, the micro-batch losses and gradients sum to the whole batch's."""
    from rlvr.core.aggregation import aggregate
    from rlvr.core.losses import covariance_selection

    g = torch.Generator().manual_seed(5)
    n, t = 12, 6
    lp = (torch.randn(n, t, generator=g, dtype=torch.float64) - 2).requires_grad_(True)
    old = lp.detach() + 0.3 * torch.randn(n, t, generator=g, dtype=torch.float64)
    adv = torch.randn(n, t, generator=g, dtype=torch.float64)
    mask = torch.arange(t)[None, :] < torch.randint(1, t + 1, (n,), generator=g)[:, None]
    sel = covariance_selection(name, logprobs=lp, old_logprobs=old, advantages=adv, loss_mask=mask,
                               generator=torch.Generator().manual_seed(1), **params)
    assert 0 < int(sel.sum()) <= int(mask.sum())
    whole_loss, _ = policy_loss(name, logprobs=lp, old_logprobs=old, advantages=adv, loss_mask=mask, selected=sel,
                                **params)
    whole = aggregate(whole_loss, mask, "token_mean")
    (g_whole,) = torch.autograd.grad(whole, lp)
    parts = 0
    for rows in (slice(0, 5), slice(5, 7), slice(7, 12)):
        loss, _ = policy_loss(name, logprobs=lp[rows], old_logprobs=old[rows], advantages=adv[rows],
                              loss_mask=mask[rows], selected=sel[rows], **params)
        parts = parts + aggregate(loss, mask[rows], "token_mean", num_tokens=mask.sum())
    (g_parts,) = torch.autograd.grad(parts, lp)
    torch.testing.assert_close(parts, whole, rtol=0, atol=1e-13)
    torch.testing.assert_close(g_parts, g_whole, rtol=0, atol=1e-13)
    # Per-micro-batch selection (the old behaviour) selects other tokens.
    local = torch.cat([
        covariance_selection(name, logprobs=lp[r], old_logprobs=old[r], advantages=adv[r], loss_mask=mask[r],
                             generator=torch.Generator().manual_seed(1), **params)
        for r in (slice(0, 5), slice(5, 7), slice(7, 12))
    ])
    assert not torch.equal(local, sel)


def test_value_clip_fraction_is_not_rounding_noise():
    """Inside the clip range the clipped branch is V itself: old + (V - old) differs from V in the last
    bit, which made `clipped > unclipped` (and vf_clip_frac) true for about half of the on-policy tokens."""
    from rlvr.core.losses import value_loss

    g = torch.Generator().manual_seed(0)
    old = torch.randn(4, 50, generator=g) * 10
    values = old + torch.randn(4, 50, generator=g) * 1e-3  # well inside the clip range 0.2
    returns = torch.randn(4, 50, generator=g)
    mask = torch.ones(4, 50, dtype=torch.bool)
    loss, m = value_loss(values, old, returns, mask, clip_range=0.2)
    assert float(m["vf_clip_frac"]) == 0.0
    torch.testing.assert_close(loss, 0.5 * (values - returns) ** 2, rtol=0, atol=0)
    far = old + 1.0  # outside: clipped to old + 0.2
    _, m = value_loss(far, old, old + 5.0, mask, clip_range=0.2)
    assert float(m["vf_clip_frac"]) == 1.0
