"""One optimizer step over a mini-batch: micro-batch forwards and backwards, the ranks' gradients summed, the
step taken or skipped.

What a micro-batch minimises is `rlvr.core.objective.rl_objective` (and `value_objective` for the critic).
Loss denominators (token count, sequence count) are those of the whole mini-batch, so splitting it into
micro-batches (or ranks) leaves the gradient unchanged. A non-finite loss or gradient skips the step on every
rank rather than corrupt the weights; `train.max_bad_steps` such steps in a row stop the run.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor

from rlvr.core.importance import importance_weights
from rlvr.core.losses import covariance_selection
from rlvr.core.objective import rl_objective, value_objective
from rlvr.models.logprobs import response_logprobs
from rlvr.train.batch import MetricSums, TrainBatch


def loss_denominators(b: TrainBatch, rows: list[int]) -> tuple[Tensor, Tensor]:
    """(valid tokens, sequences with a valid token) of the whole mini-batch `rows`, on every rank alike."""
    mask = b.loss_mask[rows]
    return mask.sum(), mask.any(dim=-1).sum()


class Updater:
    """Takes the optimizer steps of a trainer (its models, optimizers, topology and no-grad passes)."""

    def __init__(self, cfg, models, optimizers, forwards, *, routing=None, sharded=()):
        self.cfg = cfg
        self.models = models
        self.optimizers = optimizers
        self.forwards = forwards
        self.topo = forwards.topo
        self.routing = routing
        self.sharded = list(sharded)
        self.nonfinite_steps = 0
        """Optimizer steps skipped for a non-finite loss or gradient (over the run)."""
        self.bad_steps_in_row = 0
        self.mismatch: list[Tensor] = []
        """|sampler - trainer| log-prob of every valid token this rank trained in this step's first forwards."""

    def step(self, b: TrainBatch, rows: list[int], acc: MetricSums, *, kl_coef: float, covariance_selection: bool,
             cov_seed: int) -> bool:
        """One optimizer step on the mini-batch `rows`; False when it was skipped (non-finite)."""
        self.optimizers.zero_grad()
        denominators = loss_denominators(b, rows)
        if covariance_selection:
            # Clip-Cov / KL-Cov pick their tokens from the statistics of the whole mini-batch.
            b.cov_selected = self._covariance_selection(b, rows, cov_seed)
        finite, step_loss, parts = self._backward(b, [r for r in rows if r in b.own], acc, denominators, kl_coef)
        b.cov_selected = None
        finite, step_loss, parts = self._sum_over_ranks(finite, step_loss, parts)
        grad_norm = self._clip() if finite else None
        finite = finite and bool(torch.isfinite(grad_norm))
        if not finite:
            self._skip()
            return False
        self.bad_steps_in_row = 0
        acc.add_scalar("loss", step_loss)
        for k, v in parts.items():
            acc.add_scalar(k, v)
        acc.add_scalar("grad_norm", grad_norm)
        self.optimizers.step()
        sharded = self._sharded_trained()
        if sharded:
            self.topo.unshard(sharded)  # the updated shards, gathered again for the rest of the step
        return True

    # --- the micro-batches ----------------------------------------------------------------------------------

    def _backward(self, b: TrainBatch, local: list[int], acc: MetricSums, denominators, kl_coef: float):
        """Forward and backward of this rank's micro-batches: (finite, summed loss, partial loss sums)."""
        finite = True
        step_loss = torch.zeros(())
        parts: dict[str, float] = {"policy_loss": 0.0}
        if self.models.critic is not None:
            parts["value_loss"] = 0.0
        for mb, real in self.forwards.micro_batches(b, local):
            routed = self.routing.update_forward(mb, acc) if self.routing is not None and real else contextlib.nullcontext()
            with routed:
                lp, ent = self._forward(mb)
            if not real or not finite:
                # Per-layer FSDP: a filler micro-batch (or one after a non-finite loss) still runs its forward and a
                # zero backward, the collectives every rank must make; it adds nothing to the gradient.
                self._zero_backward(lp, mb)
                continue
            done = self._micro_batch(mb, lp, ent, acc, denominators, kl_coef)
            if done is None:
                finite = False
                if self.forwards.lockstep:
                    continue
                break
            loss, m = done
            step_loss = step_loss + loss
            weight = m.pop("num_valid_tokens")
            if mb.old_logprobs is None:
                self._first_forward_mismatch(mb, lp, acc)
            for k in ("policy_loss", "value_loss"):  # partial sums of the mini-batch's loss
                if k in m:
                    parts[k] = parts.get(k, 0.0) + float(m.pop(k))
            for k, val in m.items():
                acc.add_weighted(k, val, weight)
        return finite, step_loss, parts

    def _forward(self, mb: TrainBatch) -> tuple[Tensor, Tensor]:
        cfg = self.cfg
        return response_logprobs(
            self.models.policy, mb.input_ids, mb.attention_mask, mb.t, return_entropy=True, packed=self.forwards.packed,
            checkpoint_layers=cfg.train.checkpoint_activations, entropy_grad=cfg.algorithm.entropy_coef != 0,
            **self.forwards.filter(),
        )

    def _micro_batch(self, mb: TrainBatch, lp: Tensor, ent: Tensor, acc: MetricSums, denominators, kl_coef: float):
        """The loss of one micro-batch and its backward (policy, then critic): (detached loss, metrics), or None
        for a non-finite loss."""
        alg, critic = self.cfg.algorithm, self.models.critic
        params = alg.loss.model_dump(exclude={"name"})
        if mb.cov_selected is not None:
            params["selected"] = mb.cov_selected
        if mb.is_mask is not None:
            mb.is_weights = self._is_weights_of(lp.detach(), mb, acc)
        num_tokens, num_sequences = denominators
        loss, m = rl_objective(
            lp, loss_mask=mb.loss_mask, advantages=mb.advantages, old_logprobs=mb.old_logprobs,
            loss=alg.loss.name, loss_params=params, aggregation=alg.aggregation,
            num_tokens=num_tokens, num_sequences=num_sequences,
            constant=alg.aggregation_constant or self.cfg.rollout.max_new_tokens, is_weights=mb.is_weights,
            ref_logprobs=mb.ref_logprobs if alg.kl.placement == "loss" else None,
            kl_coef=kl_coef, kl_estimator=alg.kl.estimator, entropy=ent, entropy_coef=alg.entropy_coef,
        )
        if not torch.isfinite(loss):
            if self.forwards.lockstep:
                self._zero_backward(lp, mb)
            return None
        loss.backward()
        if critic is not None:
            # The critic after the policy's backward pass: their activations are never held at once.
            values = critic(mb.input_ids, mb.attention_mask, mb.t, packed=self.forwards.packed)
            vloss, vm = value_objective(values, mb.values, mb.returns, mb.loss_mask, num_tokens=num_tokens,
                                        value_clip=alg.critic.clip_range)
            if not torch.isfinite(vloss):
                if self.forwards.lockstep:
                    (values.sum() * 0.0).backward()
                return None
            vloss.backward()
            loss = loss.detach() + vloss.detach()
            m.update(vm)
        return loss.detach(), m

    def _first_forward_mismatch(self, mb: TrainBatch, lp: Tensor, acc: MetricSums) -> None:
        """An on-policy update's forward gives pi_old: the mismatch over the tokens the IS metrics count."""
        seen = mb.is_mask if mb.is_mask is not None else mb.loss_mask
        diff = lp.detach() - mb.sampler_logprobs
        acc.add("logprob_mismatch", diff.abs(), seen)
        self.mismatch.append(diff.abs()[seen].float().cpu())
        ratio = torch.exp(diff.double())[seen]
        acc.add_weighted("_is_ratio", ratio.mean() if ratio.numel() else 0.0, ratio.numel())
        acc.add_weighted("_is_ratio_sq", ratio.square().mean() if ratio.numel() else 0.0, ratio.numel())

    def _is_weights_of(self, old_logprobs: Tensor, mb: TrainBatch, acc: MetricSums) -> Tensor:
        """The IS weights of a micro-batch whose own forward gives pi_old (an on-policy update), with their metrics
        added to `acc` weighted by its valid tokens (the maximum as a maximum), as the batch-wide computation
        would give them."""
        c = self.cfg.algorithm.is_correction
        weights, metrics = importance_weights(old_logprobs, mb.sampler_logprobs, mb.is_mask, level=c.level,
                                              mode=c.mode, cap=c.cap)
        valid = float(mb.is_mask.sum())
        for k, v in metrics.items():
            if k == "is_weight_max":
                if valid:
                    acc.add_max(k, v)
            elif k != "logprob_mismatch":  # added with the other mismatch figures after the backward
                acc.add_weighted(k, v, valid)
        return weights

    def _zero_backward(self, lp: Tensor, mb: TrainBatch) -> None:
        """A backward pass that adds nothing (per-layer FSDP's collectives of a micro-batch that must not count)."""
        (lp.sum() * 0.0).backward()
        if self.models.critic is not None:
            (self.models.critic(mb.input_ids, mb.attention_mask, mb.t, packed=self.forwards.packed).sum() * 0.0).backward()

    @torch.no_grad()
    def _covariance_selection(self, b: TrainBatch, rows: list[int], seed: int) -> Tensor:
        """Clip-Cov / KL-Cov's selected tokens over the mini-batch `rows`, as a [N, T] mask of the batch."""
        # routed like the update forwards that use the selection (r2 / r3 replay the recorded experts)
        around = self.routing.replay_forward if self.routing is not None else None
        current = self.forwards.logprobs(self.models.policy, b, rows, around=around)[rows]  # summed over ranks
        old = b.old_logprobs[rows] if b.old_logprobs is not None else current
        loss = self.cfg.algorithm.loss
        selected = covariance_selection(
            loss.name, logprobs=current, old_logprobs=old, advantages=b.advantages[rows], loss_mask=b.loss_mask[rows],
            generator=torch.Generator(device=current.device).manual_seed(seed), **loss.model_dump(exclude={"name"}),
        )
        full = torch.zeros_like(b.loss_mask)
        full[rows] = selected
        return full

    # --- after the backward passes ---------------------------------------------------------------------------

    def _trained(self) -> list[torch.nn.Module]:
        return [m for m in (self.models.policy, self.models.critic) if m is not None]

    def _sharded_trained(self) -> list[torch.nn.Module]:
        # (modules sharded per layer are left to FSDP2: it summed their gradients into the shards in the backward)
        return [m for m in self._trained() if m in self.sharded and not self.topo.streams(m)]

    def _sum_over_ranks(self, finite: bool, step_loss, parts: dict[str, float]) -> tuple[bool, Any, dict[str, float]]:
        """Every rank must agree to step (or to skip); then the gradients and loss sums of all ranks are summed."""
        if not self.topo.distributed:
            return finite, step_loss, parts
        finite = self.topo.all_reduce_max(0.0 if finite else 1.0) == 0.0
        if not finite:
            return finite, step_loss, parts
        for module in (m for m in self._trained() if not self.topo.streams(m)):
            if module in self.sharded:
                self.topo.sum_gradients_into_shards_(module)  # leaves it resharded
            else:
                self.topo.sum_gradients_([p for p in module.parameters() if p.requires_grad])
        totals = torch.tensor([float(step_loss), *parts.values()], dtype=torch.float64)
        self.topo.all_reduce_sum_(totals)
        return finite, totals[0], dict(zip(parts, totals[1:].tolist()))

    def _clip(self) -> Tensor:
        """Clip the gradients to optim.max_grad_norm; the policy's norm before clipping."""
        params = [p for p in self.models.policy.parameters() if p.grad is not None]
        max_norm = self.cfg.optim.max_grad_norm or float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if hasattr(grad_norm, "full_tensor"):  # FSDP2: the norm of the sharded gradients
            grad_norm = grad_norm.full_tensor()
        if self.models.critic is not None:
            torch.nn.utils.clip_grad_norm_(self.models.critic.parameters(), max_norm)
        return grad_norm

    def _skip(self) -> None:
        """A non-finite loss or gradient: skip this optimizer step rather than corrupt the weights."""
        sharded = self._sharded_trained()
        if sharded:
            self.topo.unshard(sharded)  # they may have been resharded to take their gradients
        self.optimizers.zero_grad()
        self.nonfinite_steps += 1
        self.bad_steps_in_row += 1
        if self.bad_steps_in_row >= self.cfg.train.max_bad_steps:
            raise FloatingPointError(
                f"{self.bad_steps_in_row} optimizer steps in a row had a non-finite loss or gradient; stopping. "
                "Lower optim.lr, set optim.max_grad_norm, or check the rewards"
            )
