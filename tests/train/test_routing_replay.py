"""Routing replay in the trainer (algorithm.routing_replay, rlvr.train.routing) on a tiny Qwen3-MoE."""

from __future__ import annotations

import contextlib

import pytest
import torch

from rlvr.config import PRESETS, ConfigError
from rlvr.models.moe import RoutingHooks
from rlvr.train.build import build
from rlvr.train.data import PromptStream
from tests.tiny_run import tiny_config
from tests.train.test_learning import learning_curve

OFF_POLICY = ["train.mini_batches=2", "optim.lr=3e-2"]


def _spy_on_update_forwards(trainer, monkeypatch):
    """Around every update forward: the routes the trainer hands over, and the experts really called."""
    calls = []
    hooks = trainer.routing.hooks
    real_replay = RoutingHooks.replay

    @contextlib.contextmanager
    def replay(self, routes, *, apply=True):
        seen = []
        handles = [layer.mlp.experts.register_forward_pre_hook(lambda m, args: seen.append(args[1].clone()))
                   for layer in trainer.models.policy.model.layers]
        try:
            with real_replay(self, routes, apply=apply) as mismatch:
                yield mismatch
        finally:
            for h in handles:
                h.remove()
        calls.append((routes.clone(), seen, apply, mismatch))

    monkeypatch.setattr(type(hooks), "replay", replay)
    return calls


@pytest.mark.parametrize("mode", ["r2", "r3"])
def test_update_forwards_route_through_exactly_the_replayed_experts(tiny_moe_dir, tmp_path, monkeypatch, mode):
    cfg = tiny_config(tiny_moe_dir, tmp_path / mode, *OFF_POLICY, f"algorithm.routing_replay={mode}")
    trainer = build(cfg)
    calls = _spy_on_update_forwards(trainer, monkeypatch)
    stream = PromptStream(trainer.models.task.examples("train"), cfg.seed)
    metrics = [trainer.step(stream, step) for step in (1, 2)]
    updates = [c for c in calls if c[2]]
    assert updates, "no replayed forward"
    differed = 0
    for routes, seen, _, mismatch in updates:
        assert len(seen) == routes.shape[2]  # one forward, one experts call per MoE layer
        for layer, indices in enumerate(seen):
            want = routes[:, :, layer].reshape(-1, routes.shape[-1]).long()
            known = want[:, 0] >= 0
            assert known.any() and torch.equal(indices[known], want[known])
        differed += int(sum(m.sum() for m in mismatch.per_layer))
    # the routers would have chosen otherwise somewhere (a large step moves them): the replay overrode them
    assert differed > 0 and any(m["routing_mismatch"] > 0 for m in metrics)
    for m in metrics:
        assert 0 <= m["routing_mismatch"] <= 1 and "routing_mismatch/layer_0" in m and "routing_mismatch/layer_1" in m


def test_r3_reproduces_the_rollouts_routes_in_the_trainer(tiny_moe_dir, tmp_path):
    cfg = tiny_config(tiny_moe_dir, tmp_path / "r3", "algorithm.routing_replay=r3", "train.mini_batches=2")
    trainer = build(cfg)
    examples = trainer.models.task.examples("train")[:4]
    scored = trainer.collector.generate(examples, 7)
    assert scored.routes is not None and len(scored.routes) == len(scored)
    tensors = scored.to_tensors(trainer.models.pad_id)
    hooks = trainer.routing.hooks
    with torch.no_grad(), hooks.record() as calls:
        trainer.models.policy(input_ids=tensors["input_ids"], attention_mask=tensors["attention_mask"])
    own = calls[0].reshape(*tensors["input_ids"].shape, hooks.num_layers, hooks.top_k)
    engine = tensors["routes"]
    known = (engine[..., 0, 0] >= 0) & tensors["attention_mask"].bool()
    # every prompt and response token the engine fed has a route; only each response's last token has none
    assert int(known.sum()) == int(tensors["attention_mask"].sum()) - len(scored)
    same = (own.long().sort(-1).values == engine.long().sort(-1).values).all(-1).all(-1)
    assert torch.equal(same[known], torch.ones(int(known.sum()), dtype=torch.bool))
    # in a step, the old-policy forward replays them: no mismatch with the rollout at the sampling weights
    stream = PromptStream(trainer.models.task.examples("train"), cfg.seed)
    assert trainer.step(stream, 1)["routing_mismatch_rollout"] == 0.0


def test_without_replay_the_mismatch_is_measured_and_nothing_replayed(tiny_moe_dir, tmp_path, monkeypatch):
    cfg = tiny_config(tiny_moe_dir, tmp_path / "none", *OFF_POLICY)
    trainer = build(cfg)
    calls = _spy_on_update_forwards(trainer, monkeypatch)
    stream = PromptStream(trainer.models.task.examples("train"), cfg.seed)
    metrics = [trainer.step(stream, step) for step in (1, 2, 3)]
    assert calls and not any(apply for _, _, apply, _ in calls)
    assert any(m["routing_mismatch"] > 0 for m in metrics)  # a weight change moved some routes
    # the first mini-batch of a step runs at the old weights: nothing moved there
    assert not any(m.any() for m in calls[0][3].per_layer)


def test_a_dense_model_or_another_engine_is_refused(tiny_dir, tmp_path):
    with pytest.raises(ValueError, match="needs a mixture-of-experts model"):
        build(tiny_config(tiny_dir, tmp_path / "dense", "algorithm.routing_replay=r2"))
    with pytest.raises(ConfigError, match="only the hf engine records"):
        tiny_config(tiny_dir, tmp_path / "vllm", "algorithm.routing_replay=r3", "rollout.engine=vllm")


# CISPO keeps the gradient of every token (it clips only the detached IS weight), four mini-batches a step: at
# the toy runs' lr of 2e-2 the tiny MoE's entropy collapsed (4.4 -> 0.01 nats by step 20 with r2 on an AVX2-only
# EPYC, every sample of a group the same, so no gradient and no learning after it); at 1e-2 it learns (0.01 -> 0.3).
MOE_EXTRA = {"cispo": ["optim.lr=1e-2"]}


@pytest.mark.parametrize("mode", ["none", "r2", "r3"])
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_learns_on_the_tiny_moe_with_each_replay_mode(tiny_moe_dir, tmp_path, preset, mode):
    rewards = learning_curve(tiny_moe_dir, tmp_path / f"{preset}-{mode}", preset, f"algorithm.routing_replay={mode}",
                             *MOE_EXTRA.get(preset, []))
    first, last = sum(rewards[:2]) / 2, sum(rewards[-10:]) / 10
    assert last > first + 0.08, f"{preset}/{mode}: reward {first:.3f} -> {last:.3f}; {[round(r, 2) for r in rewards]}"


def test_an_moe_run_with_replay_checkpoints_and_resumes_exactly(tiny_moe_dir, tmp_path):
    from rlvr.train.runner import train
    from tests.train.test_resume import _rows

    overrides = ["train.steps=4", "train.mini_batches=2", "algorithm.routing_replay=r2", "checkpoint.every=2"]
    full = train(tiny_config(tiny_moe_dir, tmp_path / "full", *overrides), progress=False)
    part = tmp_path / "part"
    train(tiny_config(tiny_moe_dir, part, *[o if o != "train.steps=4" else "train.steps=2" for o in overrides]),
          progress=False)
    train(tiny_config(tiny_moe_dir, part, *overrides), resume=True, progress=False)
    a, b = _rows(full), _rows(part)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a[2:], b[2:]):
        for key in ra:
            if isinstance(ra[key], float):
                assert ra[key] == pytest.approx(rb[key], rel=1e-6, abs=1e-7), key
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(full / "checkpoints" / "step_000004" / "model")
    assert type(saved).__name__ == "Qwen3MoeForCausalLM"


@pytest.mark.parametrize("loss", ["clip_cov", "kl_cov"])
def test_the_covariance_selection_forward_replays_like_the_update(tiny_moe_dir, tmp_path, monkeypatch, loss):
    """r2 with Clip-Cov / KL-Cov: the no-grad forward that picks the tokens routes through the replayed experts,
    as the update forwards that use its selection do. Guards the selection forward that routed freely."""
    cfg = tiny_config(tiny_moe_dir, tmp_path / loss, *OFF_POLICY, "algorithm.routing_replay=r2",
                      f"algorithm.loss={loss}")
    trainer = build(cfg)
    calls = _spy_on_update_forwards(trainer, monkeypatch)
    in_selection: list[int] = []
    select = trainer.updater._covariance_selection

    def spy(*args, **kwargs):
        before = len(calls)
        out = select(*args, **kwargs)
        in_selection.extend(range(before, len(calls)))
        return out

    monkeypatch.setattr(trainer.updater, "_covariance_selection", spy)
    stream = PromptStream(trainer.models.task.examples("train"), cfg.seed)
    metrics = trainer.step(stream, 1)
    assert in_selection, "the selection forward did not replay"
    for i in in_selection:
        routes, seen, apply, _ = calls[i]
        assert apply
        for layer, indices in enumerate(seen):
            want = routes[:, :, layer].reshape(-1, routes.shape[-1]).long()
            known = want[:, 0] >= 0
            assert known.any() and torch.equal(indices[known], want[known])
    # the selection's replays add no mismatch figures of their own: the step's counts are the update's
    assert 0 <= metrics["routing_mismatch"] <= 1


@pytest.mark.parametrize(("mode", "passes"), [("none", 0), ("r2", 1)])
def test_on_policy_is_weights_are_deferred_on_an_moe_model_when_nothing_is_replayed(tiny_moe_dir, tmp_path, mode,
                                                                                   passes):
    """An exactly on-policy step with the IS correction on: without replay the weights come from the update's own
    forward (no old-policy pass), as for a dense model; r2 needs the old forward's routes. Guards MoE models that
    always paid the extra pass, also with routing_replay=none."""
    cfg = tiny_config(tiny_moe_dir, tmp_path / mode, "rollout.dtype=bfloat16", f"algorithm.routing_replay={mode}")
    trainer = build(cfg)
    assert trainer.cfg.algorithm.is_correction.enabled
    counted = []
    no_grad = trainer.forwards.logprobs
    trainer.forwards.logprobs = lambda *a, **k: counted.append(1) or no_grad(*a, **k)
    m = trainer.step(PromptStream(trainer.models.task.examples("train"), cfg.seed), 1)
    assert len(counted) == passes and "is_weight_mean" in m
