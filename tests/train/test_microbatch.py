"""The gradient of an update does not depend on how the batch is cut into micro-batches."""

from __future__ import annotations

import pytest
import torch

from rlvr.train.build import build
from rlvr.train.data import PromptStream
from tests.tiny_run import tiny_config


def _first_update_grads(tiny_dir, run_dir, *overrides, real_steps=False):
    # No gradient clipping: a clipped gradient hides a change of scale (the "can fail" checks below).
    cfg = tiny_config(tiny_dir, run_dir, "rollout.max_new_tokens=6", "optim.max_grad_norm=null", *overrides)
    trainer = build(cfg)
    grads = []

    def capture():
        grads.append([p.grad.detach().clone() for p in trainer.models.policy.parameters() if p.grad is not None])
        if real_steps:
            # Plain SGD, continuous in the gradient: Adam's first step is ~lr * sign(g), which would turn
            # rounding-level differences of near-zero gradients into differences of 2 * lr.
            with torch.no_grad():
                for p in trainer.models.policy.parameters():
                    if p.grad is not None:
                        p.sub_(0.5 * p.grad)

    trainer.optimizers.policy.step = capture
    trainer.step(PromptStream(trainer.models.task.examples("train"), cfg.seed), 1)
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
    _check_micro_batch_invariance(tiny_dir, tmp_path, overrides)


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_clip_cov_selects_over_the_whole_mini_batch(tiny_dir, tmp_path):
    """Guards a bug: Clip-Cov chose its tokens per micro-batch, so the selected fraction
    and the gradient changed with train.micro_batch_size; it now selects over the whole mini-batch."""
    overrides = ["algorithm.loss.name=clip_cov", "algorithm.loss.clip_cov_ratio=0.2", "algorithm.loss.clip_cov_lb=0",
                 "algorithm.loss.clip_cov_ub=1e9"]
    _check_micro_batch_invariance(tiny_dir, tmp_path, overrides)
    # The selection is active: with (almost) no token selected the gradient differs.
    a = _first_update_grads(tiny_dir, tmp_path / "n1", *overrides)
    b = _first_update_grads(tiny_dir, tmp_path / "n2", *overrides, "algorithm.loss.clip_cov_ratio=1e-9")
    assert not all(torch.allclose(x, y, rtol=1e-5, atol=1e-7) for x, y in zip(a[0], b[0]))


def test_kl_cov_selected_fraction_does_not_depend_on_the_micro_batch_size(tiny_dir, tmp_path):
    """Guards a bug of KL-Cov: per micro-batch, max(floor(ratio * tokens), 1) tokens each
    made the fraction grow as micro-batches shrank. (Its gradient at r = 1 is sign(log r), i.e. rounding
    noise, so the exact invariance is checked on tensors in tests/core/test_losses.py.)"""
    from rlvr.train.data import PromptStream

    fracs = []
    for i, micro in enumerate(["train.micro_batch_size=64", "train.micro_batch_size=3"]):
        cfg = tiny_config(tiny_dir, tmp_path / str(i), "rollout.max_new_tokens=6", "algorithm.loss.name=kl_cov",
                          "algorithm.loss.kl_cov_ratio=0.1", micro)
        trainer = build(cfg)
        fracs.append(trainer.step(PromptStream(trainer.models.task.examples("train"), cfg.seed), 1)["kl_cov_frac"])
    assert fracs[0] == pytest.approx(fracs[1], rel=1e-6)
    assert 0.09 < fracs[0] <= 0.1


def _check_micro_batch_invariance(tiny_dir, tmp_path, overrides, real_steps=False, rtol=1e-5, atol=1e-7):
    whole = _first_update_grads(tiny_dir, tmp_path / "a", *overrides, real_steps=real_steps)
    split = _first_update_grads(tiny_dir, tmp_path / "b", *overrides, "train.micro_batch_size=3", real_steps=real_steps)
    assert len(whole) == len(split) >= 1
    for gw, gs in zip(whole, split):
        for a, b in zip(gw, gs):
            assert torch.allclose(a, b, rtol=rtol, atol=atol), (a - b).abs().max()
    # The check can fail: a different loss normalisation changes the gradient.
    other = _first_update_grads(tiny_dir, tmp_path / "c", *overrides, "algorithm.aggregation=seq_mean_token_sum",
                                real_steps=real_steps)
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


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
@pytest.mark.parametrize("preset", ["grpo", "ppo"])
def test_policy_activation_checkpointing_does_not_change_the_gradient(tiny_dir, tmp_path, preset):
    """train.checkpoint_activations recomputes each layer in the backward pass: the same gradients."""
    kept = _first_update_grads(tiny_dir, tmp_path / "kept", f"algorithm.preset={preset}")
    recomputed = _first_update_grads(tiny_dir, tmp_path / "recomputed", f"algorithm.preset={preset}",
                                     "train.checkpoint_activations=true")
    assert len(kept) == len(recomputed) >= 1 and len(kept[0]) == len(recomputed[0]) > 0
    for a, b in zip(kept[0], recomputed[0]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_policy_activation_checkpointing_recomputes_the_layers(tiny_dir):
    """Can fail: with checkpoint_layers the packed forward's decoder layers run again in the backward pass."""
    from rlvr.models import load_model
    from rlvr.models.logprobs import response_logprobs

    model, _ = load_model(str(tiny_dir))
    calls = []
    # (q_proj, not the MLP: the recomputation stops once it has rebuilt the last saved tensor, inside the MLP)
    model.model.layers[0].self_attn.q_proj.register_forward_hook(lambda *a: calls.append(torch.is_grad_enabled()))
    ids = torch.randint(0, model.config.vocab_size, (2, 9))
    mask = torch.ones_like(ids)
    for flag, expected in ((False, 1), (True, 2)):
        calls.clear()
        lp, _ = response_logprobs(model, ids, mask, 4, packed=True, checkpoint_layers=flag)
        lp.sum().backward()
        assert len(calls) == expected, (flag, calls)
