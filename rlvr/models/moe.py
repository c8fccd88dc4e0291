"""Mixture-of-experts routing: find a model's routers, record the experts they choose, replay a record.

transformers 5.x MoE models (Qwen3-MoE, Qwen2-MoE, OLMoE, Mixtral, ...) route every token through a
`*TopKRouter` module: its forward takes the hidden states [tokens, hidden] (a [B, S, hidden] batch
flattened row-major, token b * S + s) and returns (router_logits [tokens, E], gate weights [tokens, K],
expert indices [tokens, K]); the experts then mix their outputs with those weights at those indices.

Routing replay ("Stabilizing Reinforcement Learning with LLMs: Formulation and Practices", arXiv
2512.01374): the update forwards route every token to experts recorded earlier instead of the ones the
router picks now, so that a small weight change cannot flip a token to other experts between the
forward that produced the old (or the sampler's) log-probs and the one that is differentiated.
`RoutingHooks.replay` does it with a forward hook on every router: the indices become the recorded
ones and the gate weights are recomputed from the *current* logits, with the router's own formula
restricted to the recorded experts: softmax(logits)[recorded], renormalised over the K when the router
renormalises its top-k (Mixtral always; Qwen-MoE and OLMoE when config.norm_topk_prob). So the router
still receives gradient through the weights, and where the recorded experts are the router's own
choice the output is exactly the unreplayed one.

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


def find_routers(model: nn.Module) -> list[nn.Module]:
    """The model's top-k routers in layer order (empty for a dense model)."""
    return [m for m in model.modules() if type(m).__name__.endswith("TopKRouter") and hasattr(m, "top_k")]


def is_moe(model: nn.Module) -> bool:
    return bool(find_routers(model))


def _normalises(router: nn.Module) -> bool:
    """Whether the router renormalises its top-k weights to sum to 1 (Mixtral's always do)."""
    return bool(getattr(router, "norm_topk_prob", True))


def replayed_weights(router: nn.Module, logits: Tensor, indices: Tensor) -> Tensor:
    """Gate weights [tokens, K] of experts `indices` from the current `logits`, by the router's formula."""
    probs = torch.softmax(logits.float(), dim=-1)
    weights = probs.gather(-1, indices.long())
    if _normalises(router):
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights.to(logits.dtype)


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
    """Record or replay the routes of every router of `model` (the module docstring)."""

    def __init__(self, model: nn.Module):
        self.routers = find_routers(model)
        if not self.routers:
            raise ValueError(f"{type(model).__name__} has no *TopKRouter modules: routing replay needs a "
                             "mixture-of-experts model (Qwen3-MoE, Qwen2-MoE, OLMoE, Mixtral)")
        self.top_k = int(self.routers[0].top_k)
        self.num_experts = int(getattr(self.routers[0], "num_experts", 0))

    @property
    def num_layers(self) -> int:
        return len(self.routers)

    @contextmanager
    def _hooked(self, hook_for):
        handles = [r.register_forward_hook(hook_for(i, r)) for i, r in enumerate(self.routers)]
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
            def hook(module, args, output):
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
        if routes.dim() != 4 or routes.shape[2] != self.num_layers or routes.shape[3] != self.top_k:
            raise ValueError(f"routes must be [B, S, {self.num_layers}, {self.top_k}] (layers, top_k of this model); "
                             f"got {list(routes.shape)}")
        mismatch = RouteMismatch()
        b, s = routes.shape[:2]

        def hook_for(layer: int, router: nn.Module):
            def hook(module, args, output):
                logits, weights, own = output
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
                return logits, replayed_weights(module, logits, chosen), chosen
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
