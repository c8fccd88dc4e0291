"""Routing replay on every router family the installed transformers ships (rlvr.models.moe).

The router classes are enumerated from the installed transformers' source (every `class ...Router(` in
`transformers/models/*/modeling_*.py`), so a family added by a later transformers fails here until it is
either given a replay formula, refused by name, or listed below as not a top-k token-choice router. Each
router is built from its own config shrunk to hidden_size 32, with random weights and random expert biases,
once with the config's defaults and once per flipped formula switch (norm_topk_prob, expert_selection_fn,
topk_method, use_expert_bias, scoring_func), and with a scaling factor other than 1.
"""

from __future__ import annotations

import importlib
import inspect
import re
import typing
from pathlib import Path

import pytest
import torch
import transformers
from torch import nn
from transformers import PreTrainedConfig

from rlvr.models.moe import RoutingHooks, find_routers

MODELS = Path(transformers.__file__).parent / "models"

NOT_TOP_K_ROUTERS = {
    "DbrxRouter": "returns the logits only; DbrxExperts choose the experts",
    "DeepseekV4HashRouter": "the experts are a fixed table of the token id: nothing to replay",
    "GraniteDoclingDensityRouter": "chooses a vision connector path, not experts",
    "Llama4Router": "returns dense [tokens, E] scores and the logits, no expert indices",
    "NllbMoeTop2Router": "capacity-limited dispatch masks",
    "SwitchTransformersTop1Router": "capacity-limited dispatch masks",
    "ZayaRouter": "four outputs (with the next layer's router states) and a skip-expert class",
}
"""Router classes rlvr's finder must leave alone (the model counts as dense to routing replay)."""

REFUSED = ("InklingTopkRouter", "PhimoeTopKRouter")
"""Top-k routers whose weights no replay formula reproduces: found, and refused by name."""

KNOBS = {
    "norm_topk_prob": (True, False),
    "expert_selection_fn": ("softmax", "sigmoid"),
    "topk_method": ("greedy", "group_limited_greedy"),
    "use_expert_bias": (True, False),
    "scoring_func": ("sigmoid", "sqrtsoftplus"),
}
"""Config switches that change a router's weight formula: each family is built with every value."""

SCALES = ("routed_scaling_factor", "router_scaling_factor", "route_scale", "moe_routed_scaling_factor", "output_multiplier")
TOKENS = 24


def _router_classes() -> list[tuple[str, str]]:
    """(module, class name) of every `...Router` class in the installed transformers' modeling files."""
    found = []
    for path in sorted(MODELS.glob("*/modeling_*.py")):
        for name in re.findall(r"^class (\w*Router)\(", path.read_text(), re.M):
            found.append((f"transformers.models.{path.parent.name}.{path.stem}", name))
    return found


ROUTER_CLASSES = _router_classes()
TOP_K_ROUTERS = [(m, n) for m, n in ROUTER_CLASSES if n not in NOT_TOP_K_ROUTERS]
REPLAYED = [(m, n) for m, n in TOP_K_ROUTERS if n not in REFUSED]


def _ids(pairs):
    return [n for _, n in pairs]


class Holder(nn.Module):
    """A one-router "model" for RoutingHooks."""

    def __init__(self, router: nn.Module):
        super().__init__()
        self.router = router


def _bare(module: str, name: str) -> nn.Module:
    """An instance of the class without running its __init__ (no config needed): what the finder sees by type."""
    cls = getattr(importlib.import_module(module), name)
    router = cls.__new__(cls)
    nn.Module.__init__(router)
    return router


def _configs(module, cls):
    """Candidate configs for `cls`: its __init__'s annotated config class, then every config class of the
    modeling module, each with its sub-configs and per-layer configs."""
    classes = []
    try:
        hint = typing.get_type_hints(cls.__init__, vars(module)).get("config")
        if isinstance(hint, type):
            classes.append(hint)
    except Exception:
        pass
    classes += [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, PreTrainedConfig) and v is not PreTrainedConfig]
    for config_cls in classes:
        try:
            root = config_cls()
        except Exception:
            continue
        todo = [root]
        while todo:
            cfg = todo.pop(0)
            yield cfg
            for key in getattr(cfg, "sub_configs", {}):
                sub = getattr(cfg, key, None)
                if isinstance(sub, PreTrainedConfig):
                    todo.append(sub)
            if getattr(cfg, "is_heterogeneous", False):  # per-layer settings: the last layer's config
                todo.append(cfg.per_layer_config[cfg.num_hidden_layers - 1])


def _shrink(cfg, overrides: dict):
    cfg.hidden_size = 32
    values = cfg.to_dict()
    for key in ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts"):
        if key in values and values[key] is None:
            setattr(cfg, key, 8)
    for key in ("num_experts_per_tok", "moe_topk", "top_k_experts"):
        if key in values and values[key] is None:
            setattr(cfg, key, 2)
    for key in SCALES:
        if isinstance(values.get(key), (int, float)) and not isinstance(values.get(key), bool):
            setattr(cfg, key, 2.5)
    if overrides.get("topk_method") == "group_limited_greedy" and values.get("n_group") in (None, 1):
        cfg.n_group, cfg.topk_group = 4, 2
    for key, value in overrides.items():
        setattr(cfg, key, value)


def _variants(module: str, name: str, dtype: torch.dtype = torch.float32):
    """(label, router) for the config's defaults and each flipped formula switch, random weights and biases.
    Built with `dtype` as the default dtype, as a model loaded in that dtype is: tensors the router declares
    float32 stay float32."""
    mod = importlib.import_module(module)
    cls = getattr(mod, name)
    errors = []
    for cfg in _configs(mod, cls):
        values = cfg.to_dict() if hasattr(cfg, "to_dict") else {}
        runs = [("defaults", {})] + [(f"{k}={v!r}", {k: v}) for k, options in KNOBS.items() if k in values for v in options]
        built = []
        for label, overrides in runs:
            try:
                _shrink(cfg, overrides)
                torch.manual_seed(len(built))
                default = torch.get_default_dtype()
                torch.set_default_dtype(dtype)
                try:
                    router = cls(cfg)
                finally:
                    torch.set_default_dtype(default)
            except Exception as e:  # not this router's config
                errors.append(f"{type(cfg).__name__}: {e!r}")
                break
            with torch.no_grad():
                for tensor in [*router.parameters(), *router.buffers()]:
                    if tensor.is_floating_point():
                        tensor.normal_(0.0, 0.3)
            built.append((label, router))
        if built:
            return built
    raise AssertionError(f"no config of {module} builds {name}: {errors[:3]}")


def _inputs(router: nn.Module, dtype: torch.dtype):
    """Hidden states [TOKENS, 32] (or [1, TOKENS, 32] where the router wants a batch) and the extra positional
    arguments its MoE block passes (an expert bias, float32)."""
    extra = []
    for p in list(inspect.signature(router.forward).parameters.values())[1:]:
        if "bias" in p.name:
            experts = max(t.shape[0] for t in router.parameters() if t.dim() == 2)
            extra.append(torch.randn(experts, generator=torch.Generator().manual_seed(7)) * 0.3)
    hidden = torch.randn(TOKENS, 32, generator=torch.Generator().manual_seed(3)).to(dtype)
    try:
        router(hidden, *extra)
    except Exception:
        hidden = hidden[None]
    return hidden, extra


def _route(indices: torch.Tensor) -> torch.Tensor:
    """A router's indices [tokens, K] as routes [1, tokens, 1, K]."""
    return indices.reshape(1, indices.shape[0], 1, -1).to(torch.int16)


class ForcedTopK:
    """torch.topk (function and method) patched so that the experts' top-k of a [tokens, E] score tensor picks
    `forced`: the router's own forward then computes the weights it would give to those experts."""

    def __init__(self, monkeypatch, forced: torch.Tensor, num_experts: int):
        real = torch.topk

        def topk(x, k, dim=-1, largest=True, sorted=True):
            if x.dim() == 2 and x.shape[-1] == num_experts and k == forced.shape[-1]:
                return torch.return_types.topk((x.gather(-1, forced), forced))
            return real(x, k, dim, largest, sorted)

        monkeypatch.setattr(torch, "topk", topk)
        monkeypatch.setattr(torch.Tensor, "topk", topk)


def test_the_finder_picks_up_every_top_k_router_transformers_ships_and_no_other_router():
    """Guards the enumeration itself: every router class of the installed transformers is either a top-k router
    the finder picks up (then replayed or refused below) or listed in NOT_TOP_K_ROUTERS with why it is not."""
    assert len(TOP_K_ROUTERS) > 60, "the scan of transformers/models found too few routers"
    picked = {n for m, n in ROUTER_CLASSES if find_routers(Holder(_bare(m, n)))}
    assert picked == {n for _, n in TOP_K_ROUTERS}, (
        f"picked up but listed as not top-k: {sorted(picked & set(NOT_TOP_K_ROUTERS))}; "
        f"not picked up: {sorted({n for _, n in TOP_K_ROUTERS} - picked)}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("module, name", REPLAYED, ids=_ids(REPLAYED))
def test_replaying_the_routers_own_choice_reproduces_its_gate_weights_exactly(module, name, dtype):
    """Guards each family's replay formula: with the router's own choice replayed, the gate weights (values and
    dtype: Mixtral's are float32 in a bfloat16 model) are bit for bit what the router returned."""
    for label, router in _variants(module, name, dtype):
        hidden, extra = _inputs(router, dtype)
        hooks = RoutingHooks(Holder(router))
        with torch.no_grad():
            logits, weights, indices = router(hidden, *extra)
            with hooks.replay(_route(indices)) as mismatch:
                _, replayed, replayed_indices = router(hidden, *extra)
        assert torch.equal(replayed_indices, indices) and not mismatch.per_layer[0].any()
        assert replayed.dtype == weights.dtype, f"{label}: {replayed.dtype} != the router's {weights.dtype}"
        torch.testing.assert_close(replayed, weights, rtol=0, atol=0, msg=lambda m: f"{name} {label}: {m}")


@pytest.mark.parametrize("module, name", REPLAYED, ids=_ids(REPLAYED))
def test_a_replayed_other_choice_gets_the_weights_the_router_gives_those_experts_and_trains_it(module, name, monkeypatch):
    """Guards the replay of a choice the router did not make: the weights are what the router's own forward gives
    when its top-k picks those experts (selection by bias and groups is replaced, the weights are the chosen
    experts' scores under the router's formula), and they carry gradient to the router's weights."""
    for label, router in _variants(module, name):
        if getattr(router, "topk_method", None) == "group_limited_greedy":
            continue  # its own weights come from scores zeroed outside the chosen groups; replay gathers all scores
        hidden, extra = _inputs(router, torch.float32)
        with torch.no_grad():
            logits, _, own = router(hidden, *extra)
        forced = (own + 1) % logits.shape[-1]  # a different, still distinct, choice for every token
        with monkeypatch.context() as patch, torch.no_grad():
            ForcedTopK(patch, forced, logits.shape[-1])
            _, want, got = router(hidden, *extra)
        assert torch.equal(got, forced)
        router.zero_grad(set_to_none=True)
        with RoutingHooks(Holder(router)).replay(_route(forced)) as mismatch:
            _, replayed, indices = router(hidden, *extra)
        assert torch.equal(indices, forced) and mismatch.per_layer[0].all()
        torch.testing.assert_close(replayed, want, rtol=0, atol=0, msg=lambda m: f"{name} {label}: {m}")
        (replayed * torch.randn(replayed.shape, generator=torch.Generator().manual_seed(0))).sum().backward()
        grads = [p.grad for p in router.parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{name} {label}: no gradient reaches the router"


@pytest.mark.parametrize("module, name", [(m, n) for m, n in TOP_K_ROUTERS if n in REFUSED], ids=list(REFUSED))
def test_a_router_family_without_a_replay_formula_is_refused_when_the_hooks_are_built(module, name):
    """Guards against silently wrong weights: a family whose weights no formula reproduces (PhiMoE's
    sparsemixer, Inkling's shared-expert gammas) is refused by RoutingHooks, naming the class and the
    supported families; built to measure only, the hooks compare its routes and refuse to replay them."""
    (_, router), *_ = _variants(module, name)
    with pytest.raises(ValueError, match=name) as refused:
        RoutingHooks(Holder(router))
    assert "Qwen3Moe" in str(refused.value) and "DeepseekV3" in str(refused.value)
    measuring = RoutingHooks(Holder(router), measure_only=True)  # routing_replay=none only compares routes
    hidden, extra = _inputs(router, torch.float32)
    with torch.no_grad():
        own = router(hidden, *extra)[2]
        with measuring.replay(_route(own), apply=False) as mismatch:
            router(hidden, *extra)
    assert not mismatch.per_layer[0].any()
    with pytest.raises(ValueError, match="measure_only"):
        with measuring.replay(_route(own)):
            pass


def test_an_unknown_top_k_router_is_refused_rather_than_replayed_with_a_guessed_formula():
    """Guards future and remote-code families: a *TopKRouter rlvr has no formula for is refused by name."""

    class ShinyNewTopKRouter(nn.Module):
        top_k = 2

    with pytest.raises(ValueError, match="ShinyNewTopKRouter.*no replay formula"):
        RoutingHooks(Holder(ShinyNewTopKRouter()))


def _tiny_causal_lm(model_type: str, **extra):
    sizes = dict(vocab_size=64, hidden_size=32, intermediate_size=32, moe_intermediate_size=16, num_hidden_layers=2,
                 num_attention_heads=2, num_key_value_heads=1, head_dim=16)
    config = transformers.AutoConfig.for_model(model_type, **{**sizes, **extra})
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if name.endswith("e_score_correction_bias"):  # the expert bias that only steers the choice
                tensor.normal_(0.0, 0.3)
    return model.eval()


@pytest.mark.parametrize("model_type, extra", [
    ("mixtral", {"num_local_experts": 4, "num_experts_per_tok": 2}),
    ("deepseek_v3", {"n_routed_experts": 8, "num_experts_per_tok": 2, "n_group": 2, "topk_group": 1,
                     "first_k_dense_replace": 0, "routed_scaling_factor": 2.5, "kv_lora_rank": 16, "q_lora_rank": None,
                     "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 16, "head_dim": 8}),
    ("minimax_m2", {"num_local_experts": 8, "num_experts_per_tok": 2}),
], ids=["mixtral", "deepseek_v3", "minimax_m2"])
def test_replaying_a_bfloat16_models_own_routes_changes_nothing(model_type, extra):
    """Guards the whole path in a bfloat16 model (the experts get the router's own weights, in its own dtype:
    Mixtral's float32, not the model's bfloat16): replaying the recorded routes leaves the logits unchanged."""
    model = _tiny_causal_lm(model_type, **extra).to(torch.bfloat16)
    hooks = RoutingHooks(model)
    ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), hooks.record() as calls:
        want = model(input_ids=ids).logits
    routes = calls[0].reshape(2, 7, hooks.num_layers, hooks.top_k)
    with torch.no_grad(), hooks.replay(routes) as mismatch:
        got = model(input_ids=ids).logits
    assert not any(m.any() for m in mismatch.per_layer)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_a_family_without_a_replay_formula_still_trains_without_replay():
    """PhiMoE's routes cannot be replayed exactly (refused under r2 / r3), but with routing_replay=none the trainer
    only records and compares them: building its routing part must not refuse the model."""
    from rlvr.train.routing import RoutingReplay

    model = _tiny_causal_lm("phimoe", num_local_experts=4, num_experts_per_tok=2)
    routing = RoutingReplay.build(model, "none")
    assert routing is not None and not routing.replays
    with pytest.raises(ValueError, match="PhimoeTopKRouter|PhiMoE"):
        RoutingReplay.build(model, "r2")
