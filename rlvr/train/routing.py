"""Routing replay in the RL step (`algorithm.routing_replay`), for mixture-of-experts policies.

Where the routes come from and where they are replayed (arXiv 2512.01374; rlvr.models.moe does the hooks):

| mode | old-policy forward                         | update forwards                          |
| ---- | ------------------------------------------ | ---------------------------------------- |
| none | records the trainer's routes               | route freely; mismatch measured vs those |
| r2   | records the trainer's routes               | replay them                              |
| r3   | replays the rollout engine's routes        | replay the rollout engine's routes       |

A forward that stops after decoder layer K (`algorithm.layer_policy`) records and replays only the MoE layers
below it; the routes of the layers above stay -1 (free), and the mismatch covers the layers that ran.

R3 needs an engine that records the routes it sampled with (the hf engine; rlvr.rollout.vllm says why not
vLLM yet).

The routes travel with the batch (`TrainBatch.routes`, int16 [N, P + T, layers, top_k] in the input_ids
layout), so micro-batches and mini-batches slice them like input_ids; each rank records and replays the
routes of its own rows. Metrics, every step of an MoE model:

- `routing_mismatch`: the fraction of (token, layer) routes where the router's own top-k set differs from
  the replayed (none: recorded) one in the update forwards, over real tokens that have a route;
  `routing_mismatch/layer_L` per MoE layer. r3 also logs `routing_mismatch_rollout`, the same fraction
  between the trainer's old-policy router and the engine's while sampling (training-inference mismatch).
- `routing_mismatch_is_corr`: the Pearson correlation over response tokens between the routing mismatch
  of the position that predicts the token (the fraction of its layers that differ) and the token's
  training-inference importance weight exp(old - sampler log-prob); absent where either is constant.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
from torch import Tensor

from rlvr.models.moe import NO_ROUTE, ROUTE_DTYPE, RoutingHooks, is_moe
from rlvr.train.batch import MetricSums, TrainBatch

_CORR_KEYS = ("x", "y", "xy", "xx", "yy")


class RoutingReplay:
    """The routing part of one trainer (see the module docstring); None-safe helpers for rlvr.train.rl."""

    def __init__(self, model, mode: str, engine=None):
        self.mode = mode
        # without replay the routes are only recorded and compared: any top-k router will do, also one whose
        # gate weights no replay formula reproduces (PhiMoE, Inkling)
        self.hooks = RoutingHooks(model, measure_only=mode == "none")
        if mode == "r3":
            if not hasattr(engine, "record_routes"):
                raise ValueError(f"algorithm.routing_replay=r3 needs an engine that records routes (rollout.engine=hf); "
                                 f"got {type(engine).__name__}")
            engine.record_routes = True

    @classmethod
    def build(cls, model, mode: str, engine=None) -> RoutingReplay | None:
        """The trainer's routing replay: None for a dense model with mode none; an error for r2/r3 on one."""
        if not is_moe(model):
            if mode != "none":
                raise ValueError(f"algorithm.routing_replay={mode} needs a mixture-of-experts model (one with top-k "
                                 f"router modules: Qwen-MoE, OLMoE, Mixtral, DeepSeek-V2/V3, GLM-4.x MoE, ...); "
                                 f"{type(model).__name__} has none. Use algorithm.routing_replay=none")
            return None
        return cls(model, mode, engine)

    # --- the old-policy forward --------------------------------------------------------------------------

    def old_forward(self, b: TrainBatch, acc: MetricSums | None = None):
        """A factory of contexts, one around each micro-batch of the old-policy forward over `b`. r3: the
        engine's routes must be on `b`; none/r2: `b.routes` starts empty and the old forward fills it."""
        if self.mode == "r3":
            if b.routes is None:
                raise RuntimeError("routing_replay=r3 but the rollout carries no routes: the engine did not record them")
        else:
            n, width = b.input_ids.shape
            b.routes = torch.full((n, width, self.hooks.num_layers, self.hooks.top_k), NO_ROUTE, dtype=ROUTE_DTYPE,
                                  device=b.input_ids.device)

        @contextlib.contextmanager
        def around(mb: TrainBatch):
            if self.mode == "r3":
                with self.hooks.replay(mb.routes) as mismatch:
                    yield
                if acc is not None:
                    _add_mismatch(acc, "routing_mismatch_rollout", mismatch, mb, per_layer=False)
                return
            with self.hooks.record() as calls:
                yield
            rows, cols = len(mb.rows), mb.input_ids.shape[1]
            got = calls[-1]  # [tokens, MoE layers that ran, top_k]
            if got.shape[1] < self.hooks.num_layers:
                # A forward that stops after layer K (a layer policy) routes only the layers below it; those
                # above keep no route and route freely if they ever run on these rows.
                missing = self.hooks.num_layers - got.shape[1]
                got = torch.cat([got, got.new_full((got.shape[0], missing, got.shape[2]), NO_ROUTE)], dim=1)
            got = got.reshape(rows, cols, self.hooks.num_layers, self.hooks.top_k)
            b.routes[torch.tensor(mb.rows, device=b.routes.device), mb.col0 : mb.col0 + cols] = got.to(b.routes.device)

        return around

    @property
    def replays(self) -> bool:
        """Whether the update forwards route through recorded experts (r2, r3) rather than freely (none)."""
        return self.mode != "none"

    # --- the update forwards -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def replay_forward(self, mb: TrainBatch):
        """Around a no-grad forward that must route as the update forwards do (Clip-Cov / KL-Cov's selection):
        replay under r2 / r3, free under none; no metrics."""
        if mb.routes is None or not self.replays:
            yield
            return
        with self.hooks.replay(mb.routes):
            yield

    @contextlib.contextmanager
    def update_forward(self, mb: TrainBatch, acc: MetricSums):
        """Around one micro-batch's differentiated forward: replay (r2, r3) or only compare (none)."""
        if mb.routes is None:  # none, and no old-policy forward ran: the update forward is the old policy
            yield
            return
        with self.hooks.replay(mb.routes, apply=self.replays) as mismatch:
            yield
        _add_mismatch(acc, "routing_mismatch", mismatch, mb, per_layer=True)
        if mb.old_logprobs is not None:
            _add_correlation_terms(acc, mismatch, mb)

    @staticmethod
    def finish(metrics: dict[str, float]) -> dict[str, float]:
        """The merged step metrics with the correlation's partial sums turned into `routing_mismatch_is_corr`."""
        terms = {k: metrics.pop(f"_routing_corr_{k}") for k in _CORR_KEYS if f"_routing_corr_{k}" in metrics}
        if len(terms) == len(_CORR_KEYS):
            var_x = terms["xx"] - terms["x"] ** 2
            var_y = terms["yy"] - terms["y"] ** 2
            if var_x > 1e-12 and var_y > 1e-12:
                metrics["routing_mismatch_is_corr"] = (terms["xy"] - terms["x"] * terms["y"]) / math.sqrt(var_x * var_y)
        return metrics


def _valid(mb: TrainBatch) -> Tensor:
    """[B, S] real tokens that have a route to compare with."""
    return mb.attention_mask.bool() & (mb.routes[..., 0, 0] >= 0)


def _add_mismatch(acc: MetricSums, name: str, mismatch, mb: TrainBatch, *, per_layer: bool) -> None:
    valid = _valid(mb)
    if not mismatch.per_layer or not valid.any():
        return
    acc.add(name, mismatch.positions(), valid)
    if per_layer:
        for i, layer in enumerate(mismatch.per_layer):
            acc.add(f"{name}/layer_{i}", layer.float(), valid)


def _add_correlation_terms(acc: MetricSums, mismatch, mb: TrainBatch) -> None:
    """Partial means of x (a token's routing mismatch), y (its IS weight) and their products, token-weighted,
    so that the ranks' sums merge before the correlation is formed (`RoutingReplay.finish`)."""
    positions = mismatch.positions()
    if positions is None:
        return
    t = mb.loss_mask.shape[1]
    p = mb.input_ids.shape[1] - t
    x = positions[:, p - 1 : p - 1 + t].double()  # the position whose logits give response token t
    known = _valid(mb)[:, p - 1 : p - 1 + t] & mb.loss_mask
    y = torch.exp((mb.old_logprobs - mb.sampler_logprobs).double())
    weight = float(known.sum())
    if not weight:
        return
    values: dict[str, Any] = {"x": x, "y": y, "xy": x * y, "xx": x * x, "yy": y * y}
    for key in _CORR_KEYS:
        acc.add_weighted(f"_routing_corr_{key}", float(values[key][known].mean()), weight)
