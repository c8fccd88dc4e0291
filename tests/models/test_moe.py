"""Routing hooks on a tiny Qwen3-MoE (rlvr.models.moe): record, replay, compare."""

from __future__ import annotations

import pytest
import torch
from transformers import DeepseekV3Config, Qwen3MoeConfig
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3TopkRouter
from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeTopKRouter

from rlvr.models.moe import NO_ROUTE, RoutingHooks, find_routers, replayed_weights, routes_from_rows
from rlvr.models.tiny import make_tiny_model


@pytest.fixture(scope="module")
def moe():
    model, tokenizer = make_tiny_model(arch="qwen3_moe", hidden_size=32, num_heads=2, seed=0)
    ids = torch.tensor([tokenizer.encode("hello world"), tokenizer.encode("abc, defg!?")])
    return model, ids


def _experts_inputs(model):
    """Pre-hooks on every experts module: the (indices, weights) they are called with, per layer."""
    seen, handles = [], []
    for layer in model.model.layers:
        handles.append(layer.mlp.experts.register_forward_pre_hook(
            lambda module, args: seen.append((args[1].clone(), args[2].detach().clone()))))
    return seen, handles


def _record(hooks, model, ids):
    with torch.no_grad(), hooks.record() as calls:
        logits = model(input_ids=ids).logits
    return calls[0].reshape(*ids.shape, hooks.num_layers, hooks.top_k), logits


def _other_routes(routes, num_experts):
    """Routes that differ from `routes` everywhere: each expert shifted by 3 (mod E), a valid distinct pair."""
    return (routes.long() + 3) % num_experts


def test_routers_are_found_and_routes_recorded_compactly(moe):
    model, ids = moe
    hooks = RoutingHooks(model)
    assert len(find_routers(model)) == hooks.num_layers == 2 and hooks.top_k == 2 and hooks.num_experts == 8
    routes, _ = _record(hooks, model, ids)
    assert routes.dtype == torch.int16 and routes.shape == (2, ids.shape[1], 2, 2)
    assert int(routes.min()) >= 0 and int(routes.max()) < 8
    assert len({tuple(r) for r in routes.reshape(-1, 2).tolist()}) > 3  # a random router spreads the tokens
    dense, _ = make_tiny_model(seed=0)
    with pytest.raises(ValueError, match="no \\*TopKRouter modules"):
        RoutingHooks(dense)


def test_replay_routes_through_exactly_the_recorded_experts_and_the_router_still_learns(moe):
    model, ids = moe
    hooks = RoutingHooks(model)
    routes, _ = _record(hooks, model, ids)
    forced = _other_routes(routes, hooks.num_experts).to(torch.int16)
    forced[0, 0] = NO_ROUTE  # one token routes freely
    seen, handles = _experts_inputs(model)
    model.zero_grad(set_to_none=True)
    try:
        with hooks.replay(forced) as mismatch:
            logits = model(input_ids=ids).logits
    finally:
        for h in handles:
            h.remove()
    assert len(seen) == hooks.num_layers
    for layer, (indices, weights) in enumerate(seen):
        want = forced[:, :, layer].reshape(-1, 2).long()
        known = want[:, 0] >= 0
        assert torch.equal(indices[known], want[known])  # exactly the replayed experts
        assert not known[0] and torch.all(indices[0] >= 0)  # the free token got the router's own choice
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[0]))  # renormalised top-k
    # every known position differs from the router's own choice (all experts shifted), the free one does not
    assert mismatch.per_layer[0][0, 0].item() is False and mismatch.per_layer[0].sum() == ids.numel() - 1
    logits.sum().backward()
    for router in find_routers(model):
        assert router.weight.grad is not None and router.weight.grad.abs().sum() > 0


def test_replayed_gate_weights_follow_the_routers_own_formula_worked_by_hand():
    """Guards the formula table against a hand computation: Qwen3-MoE takes the softmax over all experts at the
    replayed ones, renormalised only when norm_topk_prob; DeepSeek-V3 takes the sigmoid, renormalises and scales
    by routed_scaling_factor."""
    logits = torch.tensor([[2.0, 0.0, -1.0, 1.0]])
    indices = torch.tensor([[3, 1]])
    qwen = Qwen3MoeTopKRouter(Qwen3MoeConfig(hidden_size=8, num_experts=4, num_experts_per_tok=2, norm_topk_prob=True))
    p = torch.softmax(logits, -1)[0]
    torch.testing.assert_close(replayed_weights(qwen, logits, indices, logits)[0], torch.stack([p[3], p[1]]) / (p[3] + p[1]))
    qwen.norm_topk_prob = False
    torch.testing.assert_close(replayed_weights(qwen, logits, indices, logits)[0], torch.stack([p[3], p[1]]))
    deepseek = DeepseekV3TopkRouter(DeepseekV3Config(hidden_size=8, n_routed_experts=4, num_experts_per_tok=2, n_group=1,
                                                     topk_group=1, routed_scaling_factor=2.5))
    q = torch.sigmoid(logits)[0]
    want = 2.5 * torch.stack([q[3], q[1]]) / (q[3] + q[1])
    torch.testing.assert_close(replayed_weights(deepseek, logits, indices, logits)[0], want)


def test_replaying_the_routers_own_choice_changes_nothing(moe):
    model, ids = moe
    hooks = RoutingHooks(model)
    routes, logits = _record(hooks, model, ids)
    with torch.no_grad(), hooks.replay(routes) as mismatch:
        replayed = model(input_ids=ids).logits
    assert torch.equal(replayed, logits)
    assert all(not m.any() for m in mismatch.per_layer)


def test_without_replay_a_weight_change_moves_routes_and_the_mismatch_says_how_many(moe):
    model, ids = moe
    hooks = RoutingHooks(model)
    routes, _ = _record(hooks, model, ids)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        with torch.no_grad():
            g = torch.Generator().manual_seed(1)
            for p in model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
        moved, _ = _record(hooks, model, ids)
        with torch.no_grad(), hooks.replay(routes, apply=False) as mismatch:
            model(input_ids=ids)
    finally:
        model.load_state_dict(state)
    by_hand = (moved.long().sort(-1).values != routes.long().sort(-1).values).any(-1)  # [B, S, L]
    assert 0 < by_hand.float().mean() < 1
    got = torch.stack(mismatch.per_layer, dim=-1)
    assert torch.equal(got, by_hand)
    torch.testing.assert_close(mismatch.positions(), by_hand.float().mean(-1))


def test_replay_rejects_routes_of_another_shape(moe):
    model, ids = moe
    hooks = RoutingHooks(model)
    with pytest.raises(ValueError, match=r"routes must be \[B, S, 2, 2\]"):
        with hooks.replay(torch.zeros(2, ids.shape[1], 3, 2, dtype=torch.int16)):
            pass
    with pytest.raises(ValueError, match="the router saw"):
        with hooks.replay(torch.zeros(1, 4, 2, 2, dtype=torch.int16)):
            model(input_ids=ids)


def test_routes_from_rows_places_each_sequence_in_the_batch_layout():
    a = torch.arange(3 * 2 * 2, dtype=torch.int16).reshape(3, 2, 2)
    b = torch.arange(2 * 2 * 2, dtype=torch.int16).reshape(2, 2, 2)
    out = routes_from_rows([a, b], [(1, 3), (2, 2)], 5)
    assert out.shape == (2, 5, 2, 2)
    assert torch.equal(out[0, 1:4], a) and torch.all(out[0, [0, 4]] == NO_ROUTE)
    assert torch.equal(out[1, 2:4], b) and torch.all(out[1, [0, 1, 4]] == NO_ROUTE)
