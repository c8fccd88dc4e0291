"""The gradient of an update does not depend on how the batch is cut into micro-batches."""

from __future__ import annotations

import pytest
import torch

from rlvr.train.data import PromptStream
from rlvr.train.runner import build
from tests.train.conftest import tiny_config


def _first_update_grads(tiny_dir, run_dir, *overrides):
    # No gradient clipping: a clipped gradient hides a change of scale (the "can fail" checks below).
    cfg = tiny_config(tiny_dir, run_dir, "rollout.max_new_tokens=6", "optim.max_grad_norm=null", *overrides)
    trainer = build(cfg)
    grads = []

    def capture():
        grads.append([p.grad.detach().clone() for p in trainer.model.parameters() if p.grad is not None])

    trainer.optimizer.step = capture
    trainer.run(PromptStream(trainer.task.examples("train"), cfg.seed), 1)
    return grads


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
@pytest.mark.parametrize(
    "overrides",
    [
        ["algorithm.preset=grpo"],  # seq_mean_token_mean
        ["algorithm.preset=dapo", "algorithm.overlong.cache_len=2"],  # token_mean
        ["algorithm.preset=dr_grpo"],  # seq_mean_token_sum_norm
        ["algorithm.preset=grpo", "algorithm.kl.coef=0.1", "train.mini_batches=2", "train.epochs=2"],
        ["algorithm.preset=ppo"],
    ],
    ids=["grpo", "dapo", "dr_grpo", "grpo-kl-minibatches", "ppo"],
)
def test_micro_batch_size_does_not_change_the_gradient(tiny_dir, tmp_path, overrides):
    whole = _first_update_grads(tiny_dir, tmp_path / "a", *overrides)
    split = _first_update_grads(tiny_dir, tmp_path / "b", *overrides, "train.micro_batch_size=3")
    assert len(whole) == len(split) >= 1
    for gw, gs in zip(whole, split):
        for a, b in zip(gw, gs):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-7), (a - b).abs().max()
    # The check can fail: a different loss normalisation changes the gradient.
    other = _first_update_grads(tiny_dir, tmp_path / "c", *overrides, "algorithm.aggregation=seq_mean_token_sum")
    assert not all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(whole[0], other[0]))


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
@pytest.mark.parametrize(
    "overrides",
    [["algorithm.preset=grpo"], ["algorithm.preset=grpo", "algorithm.kl.coef=0.1", "train.mini_batches=2"],
     ["algorithm.preset=ppo"]],
    ids=["grpo", "grpo-kl-minibatches", "ppo"],
)
def test_packed_forward_does_not_change_the_gradient(tiny_dir, tmp_path, overrides):
    """The speed-ups of the log-prob forward (prompt shared by its group, no padding) leave the step's
    gradients as the padded forward gives them."""
    padded = _first_update_grads(tiny_dir, tmp_path / "a", *overrides, "train.packed=false")
    packed = _first_update_grads(tiny_dir, tmp_path / "b", *overrides)
    assert len(padded) == len(packed) >= 1
    for gw, gs in zip(padded, packed):
        for a, b in zip(gw, gs):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), (a - b).abs().max()
