"""gradient_variance against a brute-force computation that keeps every gradient."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.compare.grad_variance import _gradient, gradient_variance
from rlvr.config import resolve
from rlvr.train.runner import build
from rlvr.train.seeds import GRAD_VARIANCE, derive_seed


def test_matches_brute_force(tiny_dir, tmp_path):
    cfg = resolve({}, [f"model.name={tiny_dir}", "model.device=cpu", "task.name=symbol", "task.template=chat",
                       "rollout.prompts_per_step=4", "rollout.group_size=4", "rollout.max_new_tokens=4",
                       f"run_dir={tmp_path}"])
    trainer = build(cfg)
    examples = trainer.task.examples("train")[:4]
    names = ["reinforce", "grpo", "rloo", "remax"]
    got = gradient_variance(trainer, examples, names, batches=3, seed=5)
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    for e in names:
        grads = []
        for b in range(3):
            scored = trainer.generate_shared(examples, derive_seed(5, GRAD_VARIANCE, b))
            baseline = trainer.greedy_baseline(scored, b) if e == "remax" else None
            grads.append(_gradient(trainer, params, scored, baseline, e, {}, "seq_mean_token_sum_norm").double())
        g = torch.stack(grads)
        mean = g.mean(0)
        trace = float(((g - mean) ** 2).sum() / 2)
        # a batch whose gradient is 0 (reinforce when every reward is 0) has no cosine: left out
        cos = [float(torch.dot(x, mean) / (x.norm() * mean.norm())) for x in g if x.norm() > 0]
        assert got[e]["trace_cov"]["mean"] == pytest.approx(trace, rel=1e-6, abs=1e-12), e
        if cos:
            assert got[e]["cosine_to_mean"]["mean"] == pytest.approx(sum(cos) / len(cos), rel=1e-6), e
        assert got[e]["trace_cov"]["mean"] >= 0
        assert not cos or -1 <= got[e]["cosine_to_mean"]["mean"] <= 1
    # the estimators really differ on the same batches
    assert len({round(got[e]["trace_cov"]["mean"], 12) for e in names}) > 1
    assert "gae" not in gradient_variance(trainer, examples, ["gae"], batches=2)  # no critic: skipped
    with pytest.raises(ValueError, match="batches must be >= 2"):
        gradient_variance(trainer, examples, ["grpo"], batches=1)
    assert math.isfinite(got["grpo"]["mean_grad_norm"])
