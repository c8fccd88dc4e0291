"""The trainer's no-grad forward passes over a batch (old policy, reference, critic, a covariance selection's
current policy): each rank computes its own rows, micro-batch by micro-batch, and the ranks' results are summed,
so every rank holds them all."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from rlvr.models.logprobs import response_logprobs
from rlvr.train.batch import TrainBatch


class Forwards:
    """No-grad passes, every trainer log-prob evaluated under the sampler's filter (`filter`: temperature,
    top-k, top-p; and in a layer-policy phase the layer whose internal policy stands for the policy)."""

    def __init__(self, topo, *, micro_batch_size: int | None, packed: bool | None, lockstep: bool, rollout_cfg,
                 layer_policy_cfg=None):
        self.topo = topo
        self.micro_batch_size = micro_batch_size
        self.packed = packed
        """response_logprobs' `packed`: None uses the packed forward wherever the model allows it."""
        self.lockstep = lockstep
        """Per-layer FSDP: every rank runs as many micro-batches (Topology.micro_batches)."""
        self.rollout_cfg = rollout_cfg
        self.layer_policy_cfg = layer_policy_cfg
        self.layer: int | None = None
        """The decoder layer whose internal policy stands for the policy in this step's objective, or None."""

    def filter(self) -> dict:
        """The sampler's processing, under which every trainer log-prob is evaluated (rlvr.core.filtering)."""
        r = self.rollout_cfg
        out: dict = {"temperature": r.temperature, "top_k": r.top_k, "top_p": r.top_p}
        if self.layer is not None:  # Bottom-up Policy Optimization's phase: pi_K instead of the policy
            out.update(layer=self.layer, final_norm=self.layer_policy_cfg.final_norm)
        return out

    def micro_batches(self, b: TrainBatch, rows: list[int]) -> list[tuple[TrainBatch, bool]]:
        return self.topo.micro_batches(b, rows, self.micro_batch_size, lockstep=self.lockstep)

    def my_rows(self, b: TrainBatch, rows=None) -> list[int]:
        """`rows` (default all) of the batch that this rank computes: those of its share (`b.own`)."""
        rows = range(b.loss_mask.shape[0]) if rows is None else rows
        return [r for r in rows if b.own is None or r in b.own] if self.topo.distributed else list(rows)

    @torch.no_grad()
    def logprobs(self, model, b: TrainBatch, rows=None, *, everywhere: bool = False, around=None) -> Tensor:
        """Log-probs [N, T] of `rows` (default all) of the batch. everywhere: each rank computes all of them
        itself (no sum). around(mb): a context around each micro-batch's forward (routing replay's record or
        replay)."""
        out = torch.zeros_like(b.sampler_logprobs)
        mine = list(range(b.loss_mask.shape[0])) if everywhere else self.my_rows(b, rows)
        for mb, real in self.micro_batches(b, mine):
            with around(mb) if around is not None and real else contextlib.nullcontext():
                lp, _ = response_logprobs(model, mb.input_ids, mb.attention_mask, mb.t, packed=self.packed,
                                          **self.filter())
            if real:
                out[mb.rows, : mb.t] = lp
        return out if everywhere else self.topo.all_reduce_sum_(out)

    @torch.no_grad()
    def values(self, critic, b: TrainBatch) -> Tensor:
        """The critic's values [N, T] (0 off the loss mask)."""
        out = torch.zeros_like(b.sampler_logprobs)
        for mb, real in self.micro_batches(b, self.my_rows(b)):
            values = critic(mb.input_ids, mb.attention_mask, mb.t, packed=self.packed)
            if real:
                out[mb.rows, : mb.t] = values
        self.topo.all_reduce_sum_(out)
        return torch.where(b.loss_mask, out, torch.zeros_like(out))
