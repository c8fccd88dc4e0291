"""Mixture-of-experts routing: find a model's routers, record the experts they choose, replay a record.

transformers 5.x MoE models route every token through a top-k router module (`*TopKRouter`, `*TopkRouter`,
and Afmoe's, Gemma 4's and DiffusionGemma's routers): its forward takes the hidden states [tokens, hidden]
(a [B, S, hidden] batch flattened row-major, token b * S + s) and returns (router logits [tokens, E], gate
weights [tokens, K], expert indices [tokens, K]); the experts then mix their outputs with those weights at
those indices. Routers of another shape are not found, and their models count as dense: Llama 4 (dense
sigmoid scores, no indices), DBRX (logits only), Switch/NLLB (capacity-limited dispatch masks), Zaya (four
outputs), and DeepSeek-V4's hash-routed layers (experts fixed by the token id: nothing to replay).

Routing replay ("Stabilizing Reinforcement Learning with LLMs: Formulation and Practices", arXiv
2512.01374): the update forwards route every token to experts recorded earlier instead of the ones the
router picks now, so that a small weight change cannot flip a token to other experts between the
forward that produced the old (or the sampler's) log-probs and the one that is differentiated.
`RoutingHooks.replay` does it with a forward hook on every router: the indices become the recorded
ones and the gate weights are recomputed from the *current* logits by that router's own formula at the
recorded experts (`GATE_FORMULAS`), as Megatron-LM and verl do: the expert selection (top-k, the expert
bias, group limits) is replaced, then the router's scoring, normalisation, scaling and output dtype
apply to the chosen experts' scores. So the router still receives gradient through the weights, and
where the recorded experts are the router's own choice the output is bit for bit the unreplayed one.
A router family without a formula (`REFUSED_ROUTERS`, or one rlvr does not know) is refused when the
hooks are built.

Routes are stored compactly: int16 [B, S, L, K] (sequence, position, MoE layer, k) in the layout of the
forward's input_ids, -1 where nothing was recorded (that token routes freely).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

NO_ROUTE = -1
ROUTE_DTYPE = torch.int16


@dataclass(frozen=True)
class GateFormula:
    """How a router turns its returned logits L [tokens, E] into the gate weights of chosen experts `idx`:
    score, gather at idx, normalise, scale, cast, in that order, each step exactly as the router does it."""

    score: str
    """softmax_f32: softmax(L.float()); softmax_as_f32: softmax(L, dtype=float32); softmax: softmax(L);
    sigmoid: sigmoid(L); sigmoid_f32: sigmoid(L.float()); score_fn: router.score_fn(L); probs: L holds
    the probabilities already. Over the chosen experts only (gathered first): softmax_topk: softmax(L[idx]);
    softmax_topk_as_f32: softmax(L[idx], dtype=float32); sigmoid_topk: sigmoid(L[idx])."""
    normalise: bool | str = False
    """Divide by the sum over the K: True always; "norm_topk_prob" where the router's attribute says so."""
    eps: float = 0.0
    """Added to that sum."""
    clamp: str | None = None
    """The router attribute the sum is clamped at from below (instead of eps)."""
    scale: str | None = None
    """The router attribute (a number) multiplied in; "per_expert_scale": router.per_expert_scale[idx];
    "/top_k": divided by K."""
    cast: str | None = None
    """None: as computed; "logits" / "hidden": to L's / the router input's dtype; "hidden,float32": to the
    input's dtype and back to float32."""


_MIXTRAL = GateFormula("softmax_f32", normalise=True)
_QWEN = GateFormula("softmax_as_f32", normalise="norm_topk_prob", cast="logits")
_QWEN_ALWAYS = GateFormula("softmax_as_f32", normalise=True, cast="logits")
_DEEPSEEK_V2 = GateFormula("softmax_as_f32", scale="routed_scaling_factor")
_DEEPSEEK_V3 = GateFormula("sigmoid", normalise="norm_topk_prob", eps=1e-20, scale="routed_scaling_factor")
_DEEPSEEK_V4 = GateFormula("score_fn", normalise=True, eps=1e-20, scale="routed_scaling_factor")
_MINIMAX_M2 = GateFormula("sigmoid_f32", normalise=True)
_SIGMOID_SCALED = GateFormula("sigmoid", normalise=True, eps=1e-20, scale="router_scaling_factor")
_MISTRAL4 = GateFormula("softmax", normalise="norm_topk_prob", eps=1e-20, scale="routed_scaling_factor")
_GRANITE = GateFormula("softmax_topk", cast="hidden")
_ERNIE = GateFormula("softmax_as_f32", normalise=True, clamp="norm_min", cast="hidden")
_GEMMA4 = GateFormula("probs", normalise=True, scale="per_expert_scale")
_KOLIBRI = GateFormula("sigmoid_topk", normalise="norm_topk_prob")

GATE_FORMULAS: dict[str, GateFormula] = {
    # softmax over all experts, gathered, renormalised
    "MixtralTopKRouter": _MIXTRAL,
    "MiniMaxTopKRouter": _MIXTRAL,
    **dict.fromkeys(("Qwen2MoeTopKRouter", "Qwen3MoeTopKRouter", "Qwen3NextTopKRouter", "Qwen3OmniMoeThinkerTextTopKRouter",
                     "Qwen3OmniMoeTalkerTextTopKRouter", "Qwen4ExpTextTopKRouter", "OlmoeTopKRouter", "FlexOlmoTopKRouter",
                     "MellumTopKRouter"), _QWEN),
    **dict.fromkeys(("Qwen3_5MoeTopKRouter", "Qwen3OmniMoeTextTopKRouter", "Qwen3VLMoeTextTopKRouter"), _QWEN_ALWAYS),
    "LaraMiniTopKRouter": GateFormula("softmax", normalise="norm_topk_prob", cast="hidden"),
    "JambaTopKRouter": GateFormula("softmax_as_f32", cast="hidden"),
    "Ernie4_5_MoeTopKRouter": _ERNIE,
    "Ernie4_5_VLMoeMoeTopKRouter": _ERNIE,
    **dict.fromkeys(("DeepseekV2TopkRouter", "DeepseekOcr2TextTopkRouter", "UnlimitedOcrTextTopkRouter"), _DEEPSEEK_V2),
    "LongcatFlashTopkRouter": GateFormula("softmax", scale="routed_scaling_factor", cast="logits"),
    "Mistral4TopkRouter": _MISTRAL4,
    "MistralLarge4TextTopkRouter": GateFormula("softmax", normalise=True, eps=1e-20, scale="routed_scaling_factor"),
    "Gemma4TextRouter": _GEMMA4,
    "DiffusionGemmaTextRouter": _GEMMA4,
    # softmax over the chosen experts' logits
    "AriaTextTopKRouter": GateFormula("softmax_topk"),
    "GptOssTopKRouter": GateFormula("softmax_topk"),
    **dict.fromkeys(("GraniteMoeTopKRouter", "GraniteMoeSWATopKRouter", "GraniteMoeHybridTopKRouter",
                     "GraniteMoeSharedTopKRouter"), _GRANITE),
    "OpenAIPrivacyFilterTopKRouter": GateFormula("softmax_topk", scale="/top_k"),
    # sigmoid scores (an expert bias, where there is one, only steers the choice)
    **dict.fromkeys(("DeepseekV3TopkRouter", "DeepseekV32TopkRouter", "AXK1TopkRouter", "AXK2TopkRouter",
                     "BailingHybridTopkRouter", "Dots1TopkRouter", "Dots3NoteTextTopkRouter", "ExaoneMoeTopkRouter",
                     "Glm4MoeTopkRouter", "Glm4MoeLiteTopkRouter", "Glm4vMoeTextTopkRouter", "Glm5NextTextTopkRouter",
                     "GlmMoeDsaTopkRouter", "HYV4TopkRouter", "HYV4VLTopkRouter", "KimiLinearTopkRouter",
                     "MiMoV2FlashTopkRouter", "MiniCPM5MoeTopkRouter", "NemotronHTopkRouter", "SolarOpenTopkRouter"),
                    _DEEPSEEK_V3),
    "BeamTopKRouter": GateFormula("sigmoid", normalise="norm_topk_prob", eps=1e-20),
    **dict.fromkeys(("DeepseekV4TopKRouter", "Inkling2TopKRouter", "Inkling2LoopTopKRouter"), _DEEPSEEK_V4),
    **dict.fromkeys(("MiniMaxM2TopKRouter", "MiniMaxM3VLTopKRouter", "Step3p7TopKRouter"), _MINIMAX_M2),
    "HYV3TopKRouter": _SIGMOID_SCALED,
    "Dots3NoteVisionTopKRouter": _SIGMOID_SCALED,
    "AfmoeTokenChoiceRouter": GateFormula("sigmoid", normalise=True, eps=1e-20, scale="route_scale"),
    "ErgoTopkRouter": GateFormula("sigmoid", normalise=True, eps=1e-20, scale="routed_scaling_factor", cast="hidden,float32"),
    "MuseSparkTopkRouter": GateFormula("sigmoid", normalise=True, eps=1e-15, scale="routed_scaling_factor"),
    "Lfm2MoeTopKRouter": GateFormula("sigmoid", normalise="norm_topk_prob", eps=1e-6, scale="routed_scaling_factor"),
    "LagunaTopKRouter": GateFormula("sigmoid", normalise=True, cast="hidden"),
    "FlintTopKRouter": GateFormula("sigmoid", normalise="norm_topk_prob"),
    "Kolibri1TopKRouter": _KOLIBRI,
    "Kolibri1_1TopKRouter": _KOLIBRI,
}
"""Each supported router class's formula, by class name (transformers 5.25), with Cohere2-MoE's (by its
expert_selection_fn) in `_COHERE2`. L: the logits the router returns, idx: the chosen experts, sum: over
the K, rsf: the router's scaling factor; a bias in the selection and group limits are not part of any.

- softmax(L)[idx] / sum: Mixtral, MiniMax, Qwen3.5-MoE, Qwen3-VL-MoE, Qwen3-Omni text
- softmax(L)[idx], / sum if norm_topk_prob: Qwen2-MoE, Qwen3-MoE, Qwen3-Next, Qwen3-Omni thinker and talker,
  Qwen4-Exp, OLMoE, FlexOlmo, Mellum, LaraMini
- softmax(L)[idx] / max(sum, norm_min): ERNIE 4.5 MoE and VL-MoE
- softmax(L)[idx]: Jamba
- softmax(L)[idx] * rsf: DeepSeek-V2, DeepSeek-OCR2, UnlimitedOcr, LongCat-Flash
- softmax(L)[idx] / (sum + 1e-20) * rsf: Mistral Large 4; Mistral 4 renormalised if norm_topk_prob
- L[idx] / sum * per_expert_scale[idx] (L: the probabilities): Gemma 4, DiffusionGemma
- softmax(L[idx]): Aria, gpt-oss, Granite-MoE (all four), Cohere2-MoE (softmax); / K: OpenAI privacy filter
- sigmoid(L)[idx], / (sum + 1e-20) if norm_topk_prob, * rsf: DeepSeek-V3 and V3.2, Glm4Moe, Glm4MoeLite,
  Glm4vMoe, Glm5Next, GlmMoeDsa, Kimi-Linear, Dots1, Dots3 text, EXAONE-MoE, HY-V4 and HY-V4-VL,
  MiMo-V2-Flash, MiniCPM5-MoE, Nemotron-H, Solar-Open, AXK1, AXK2, Bailing-Hybrid; Beam without rsf
- score_fn(L)[idx] / (sum + 1e-20) * rsf (the config's scoring_func): DeepSeek-V4, Inkling2, Inkling2-Loop
- sigmoid(L)[idx] / sum: MiniMax-M2, MiniMax-M3-VL, Step3p7, Laguna
- sigmoid(L)[idx] / (sum + eps) * rsf: HY-V3, Dots3 vision, Afmoe, Ergo (eps 1e-20), MuseSpark (eps 1e-15)
- sigmoid(L)[idx], / (sum + 1e-6) if norm_topk_prob, * rsf: Lfm2-MoE
- sigmoid(L)[idx], / sum if norm_topk_prob: Flint, Kolibri1, Kolibri1.1, Cohere2-MoE (sigmoid)

Each is computed in the router's own precision and returned in its own dtype (Mixtral's float32 in a
bfloat16 model; Qwen's cast back to the logits' dtype)."""

_COHERE2 = {"softmax": GateFormula("softmax_topk_as_f32", cast="hidden"),
            "sigmoid": GateFormula("sigmoid_topk", normalise="norm_topk_prob", cast="hidden")}
_FORMULA_BY_ATTRIBUTE = {"Cohere2MoeTopKRouter": ("expert_selection_fn", _COHERE2)}

REFUSED_ROUTERS = {
    "PhimoeTopKRouter": "its sparsemixer weights each chosen expert by a softmax over the experts within a margin of "
                        "that expert's logit, and in training samples the choice and estimates the gradient (Heun)",
    "InklingTopkRouter": "it returns shared-expert gammas computed jointly with the chosen experts, from logits it "
                         "does not return",
}
"""Top-k routers whose gate weights no replay formula reproduces, with why."""

_SCORES = {
    "softmax_f32": lambda r, x: torch.softmax(x.float(), dim=-1),
    "softmax_as_f32": lambda r, x: torch.softmax(x, dim=-1, dtype=torch.float32),
    "softmax": lambda r, x: torch.softmax(x, dim=-1),
    "sigmoid": lambda r, x: torch.sigmoid(x),
    "sigmoid_f32": lambda r, x: torch.sigmoid(x.float()),
    "score_fn": lambda r, x: r.score_fn(x),
    "probs": lambda r, x: x,
}
_SCORES_OF_CHOSEN = {
    "softmax_topk": lambda x: torch.softmax(x, dim=-1),
    "softmax_topk_as_f32": lambda x: torch.softmax(x, dim=-1, dtype=torch.float32),
    "sigmoid_topk": lambda x: torch.sigmoid(x),
}


def _is_router(module: nn.Module) -> bool:
    name = type(module).__name__
    return name.endswith(("TopKRouter", "TopkRouter")) or name in GATE_FORMULAS or name in REFUSED_ROUTERS


def find_routers(model: nn.Module) -> list[nn.Module]:
    """The model's top-k routers in layer order (empty for a dense model), whether or not they can be replayed."""
    return [m for m in model.modules() if _is_router(m)]


def is_moe(model: nn.Module) -> bool:
    return bool(find_routers(model))


def _families() -> str:
    names = {n.removesuffix("TopKRouter").removesuffix("TopkRouter").removesuffix("Router") for n in
             [*GATE_FORMULAS, *_FORMULA_BY_ATTRIBUTE]}
    return ", ".join(sorted(names, key=str.lower))


def gate_formula(router: nn.Module) -> GateFormula:
    """The router's replay formula; a ValueError naming the class and the supported families where there is none."""
    name = type(router).__name__
    if name in GATE_FORMULAS:
        return GATE_FORMULAS[name]
    if name in _FORMULA_BY_ATTRIBUTE:
        attribute, formulas = _FORMULA_BY_ATTRIBUTE[name]
        value = getattr(router, attribute, None)
        if value in formulas:
            return formulas[value]
        why = f"its {attribute}={value!r} has no replay formula (supported: {sorted(formulas)})"
    elif name in REFUSED_ROUTERS:
        why = f"its gate weights have no replay formula: {REFUSED_ROUTERS[name]}"
    else:
        why = "rlvr has no replay formula for this router (its gate weights cannot be recomputed at replayed experts)"
    raise ValueError(f"routing replay: {name}: {why}. Replay supports the routers of {_families()}; "
                     "use algorithm.routing_replay=none for this model")


def router_top_k(router: nn.Module) -> int:
    """How many experts the router chooses per token (Gemma 4's routers keep it on their config)."""
    top_k = getattr(router, "top_k", None)
    if top_k is None:
        top_k = router.config.top_k_experts
    return int(top_k)


def replayed_weights(router: nn.Module, logits: Tensor, indices: Tensor, hidden: Tensor) -> Tensor:
    """Gate weights [tokens, K] of experts `indices` from the router's returned `logits`, by the router's own
    formula (`gate_formula`): exactly the router's output where `indices` is its own choice. `hidden` is the
    router's input (some routers cast the weights to its dtype)."""
    f = gate_formula(router)
    idx = indices.long()
    if f.score in _SCORES_OF_CHOSEN:
        weights = _SCORES_OF_CHOSEN[f.score](logits.gather(-1, idx))
    else:
        weights = _SCORES[f.score](router, logits).gather(-1, idx)
    if f.normalise is True or (f.normalise and getattr(router, f.normalise)):
        total = weights.sum(dim=-1, keepdim=True)
        if f.clamp is not None:
            total = total.clamp(min=getattr(router, f.clamp))
        elif f.eps:
            total = total + f.eps
        weights = weights / total
    if f.scale == "per_expert_scale":
        weights = weights * router.per_expert_scale[idx]
    elif f.scale == "/top_k":
        weights = weights / router.top_k
    elif f.scale is not None:
        weights = weights * getattr(router, f.scale)
    if f.cast == "logits":
        weights = weights.to(logits.dtype)
    elif f.cast == "hidden":
        weights = weights.to(hidden.dtype)
    elif f.cast == "hidden,float32":
        weights = weights.to(hidden.dtype).float()
    return weights


@dataclass
class RouteMismatch:
    """Where the router's own choice differs from the replayed (or recorded) experts, per forward."""

    per_layer: list[Tensor] = field(default_factory=list)
    """One [B, S] bool per MoE layer: the sets of experts differ at that position."""

    def positions(self) -> Tensor | None:
        """[B, S] fraction of layers whose choice differs."""
        if not self.per_layer:
            return None
        return torch.stack(self.per_layer).float().mean(0)


class RoutingHooks:
    """Record or replay the routes of every router of `model` (the module docstring). Refuses, before any
    forward, a router without a replay formula, unless measure_only (record and compare only: replay(apply=
    False); any top-k router will do)."""

    def __init__(self, model: nn.Module, *, measure_only: bool = False):
        self.routers = find_routers(model)
        if not self.routers:
            raise ValueError(f"{type(model).__name__} has no *TopKRouter modules: routing replay needs a mixture-of-experts "
                             f"model (the routers of {_families()})")
        self.measure_only = measure_only
        if not measure_only:
            for router in self.routers:
                gate_formula(router)
        top_ks = {router_top_k(r) for r in self.routers}
        if len(top_ks) != 1:
            raise ValueError(f"routing replay needs one top_k for all of {type(model).__name__}'s routers; they choose "
                             f"{sorted(top_ks)} experts")
        self.top_k = top_ks.pop()
        self.num_experts = int(getattr(self.routers[0], "num_experts", 0) or 0)

    @property
    def num_layers(self) -> int:
        return len(self.routers)

    @contextmanager
    def _hooked(self, hook_for):
        handles = [r.register_forward_hook(hook_for(i, r), with_kwargs=True) for i, r in enumerate(self.routers)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    @contextmanager
    def record(self):
        """Record every forward's experts: yields a list that holds, after the block, one int16
        [tokens, L, K] tensor per forward (tokens in the forward's row-major order, b * S + s)."""
        calls: list[list[Tensor]] = []
        out: list[Tensor] = []

        def hook_for(layer: int, router: nn.Module):
            def hook(module, args, kwargs, output):
                if layer == 0:
                    calls.append([])
                calls[-1].append(output[2].detach().to(ROUTE_DTYPE))
            return hook

        with self._hooked(hook_for):
            yield out
        out.extend(torch.stack(layers, dim=1) for layers in calls)

    @contextmanager
    def replay(self, routes: Tensor, *, apply: bool = True):
        """Route the forwards inside the block by `routes` [B, S, L, K] (the forward's input layout; -1:
        route freely). apply=False only measures: the router's own choice is kept and compared. Yields a
        RouteMismatch filled by the block's forward (the last forward's, if several)."""
        if apply and self.measure_only:
            raise ValueError("these RoutingHooks were built with measure_only=True: they compare routes but do not replay them")
        if routes.dim() != 4 or routes.shape[2] != self.num_layers or routes.shape[3] != self.top_k:
            raise ValueError(f"routes must be [B, S, {self.num_layers}, {self.top_k}] (layers, top_k of this model); "
                             f"got {list(routes.shape)}")
        mismatch = RouteMismatch()
        b, s = routes.shape[:2]

        def hook_for(layer: int, router: nn.Module):
            def hook(module, args, kwargs, output):
                logits, own = output[0], output[2]
                if own.shape[0] != b * s:
                    raise ValueError(f"routing replay: the router saw {own.shape[0]} tokens, the recorded routes "
                                     f"cover {b} x {s}; replay needs the padded forward of the same batch")
                if layer == 0:
                    mismatch.per_layer.clear()
                given = routes[:, :, layer].reshape(b * s, -1).to(own.device)
                known = given[:, 0] >= 0
                differs = (own.sort(-1).values != given.long().sort(-1).values).any(-1) & known
                mismatch.per_layer.append(differs.reshape(b, s))
                if not apply:
                    return None
                chosen = torch.where(known[:, None], given.long(), own)
                hidden = args[0] if args else kwargs["hidden_states"]
                return logits, replayed_weights(module, logits, chosen, hidden), chosen
            return hook

        with self._hooked(hook_for):
            yield mismatch


def routes_from_rows(rows: list[Tensor], layout: list[tuple[int, int]], width: int) -> Tensor:
    """Per-sequence routes (row r: [len_r, L, K] for its tokens in order) placed into a batch layout
    [B, width, L, K]: row r's tokens start at column layout[r][0] and number layout[r][1]; -1 elsewhere."""
    num_layers, top_k = rows[0].shape[1:] if rows else (0, 0)
    out = torch.full((len(rows), width, num_layers, top_k), NO_ROUTE, dtype=ROUTE_DTYPE)
    for r, (start, length) in enumerate(layout):
        got = rows[r][:length]
        out[r, start : start + got.shape[0]] = got
    return out
