"""Preparing a scored batch for its optimizer steps: the no-grad passes the plan asks for (old policy, reference,
critic, ReMax's greedy baseline), shaped rewards, advantages, Differential Smoothing, and the IS weights."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from rlvr.core.advantages import compute_advantages, outcome_to_token_rewards
from rlvr.core.importance import importance_weights
from rlvr.core.kl import kl_divergence
from rlvr.core.masked import masked_sum
from rlvr.core.shaping import differential_smoothing, overlong_penalty
from rlvr.models.lora import reference_mode
from rlvr.rollout.base import RolloutBatch
from rlvr.train.batch import MetricSums, TrainBatch
from rlvr.train.plan import StepPlan


@dataclass
class Models:
    """What a trainer trains and samples with. `policy` is the model the optimizer steps (with a LoRA policy, the
    base model with the adapters in it, `lora` the peft model); `reference` is None without a KL term."""

    policy: torch.nn.Module
    tokenizer: object
    task: object
    engine: object
    reference: torch.nn.Module | None = None
    critic: torch.nn.Module | None = None
    lora: object | None = None
    eval_engine: object | None = None
    """The engine of held-out evaluation when it is not `engine`: with a rollout worker process (whose weights
    may be older than the trainer's), an engine in the trainer's process on the policy itself."""

    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device

    @property
    def pad_id(self) -> int:
        t = self.tokenizer
        return t.pad_token_id if t.pad_token_id is not None else t.eos_token_id


@dataclass
class Prepared:
    """A batch ready for its optimizer steps, and what the step's metrics need of its preparation."""

    batch: TrainBatch
    rollouts: RolloutBatch
    full_mask: Tensor
    """The loss mask before DAPO's overlong filter: the tokens the mismatch and IS metrics are taken over."""
    reward_kl: Tensor | None = None
    """Per-token KL of the policy from the reference, when it is placed in the reward."""
    is_metrics: dict[str, Tensor] = field(default_factory=dict)


def own_rows(prompt_index: list[int], topo) -> list[int]:
    """The rows this rank trains on: the samples of a contiguous share of the batch's groups (every rank holds
    the whole batch; a share may be empty when the batch has fewer groups than ranks)."""
    groups = sorted(set(prompt_index))
    w, r, g = topo.world_size, topo.rank, len(groups)
    mine = set(groups[r * g // w : (r + 1) * g // w])
    return [i for i, p in enumerate(prompt_index) if p in mine]


def shaped_rewards(cfg, rewards: Tensor, loss_mask: Tensor) -> Tensor:
    """The outcome rewards [N] with DAPO's overlong penalty when it is on."""
    o = cfg.algorithm.overlong
    if o.enabled:
        rewards = rewards + overlong_penalty(loss_mask.sum(-1), cfg.rollout.max_new_tokens, o.cache_len)
    return rewards


def prepare(cfg, plan: StepPlan, rollouts: RolloutBatch, *, models: Models, forwards, routing, collector,
            kl_coef: float, acc: MetricSums, step: int) -> Prepared:
    """The passes, advantages and IS weights of one step's batch, in the order the plan gives them."""
    device = models.device
    b = TrainBatch.from_rollout(rollouts, models.pad_id, device)
    b.own = set(own_rows(rollouts.prompt_index, forwards.topo))
    rewards = shaped_rewards(cfg, rollouts.reward_tensor().to(device), b.loss_mask)
    if plan.old_logprobs:
        around = routing.old_forward(b, acc) if routing is not None else None
        b.old_logprobs = forwards.logprobs(models.policy, b, around=around)
    if plan.reference:
        with reference_mode(models.lora):
            b.ref_logprobs = forwards.logprobs(models.reference, b)
    if models.critic is not None:
        b.values = forwards.values(models.critic, b)
    baseline = None
    if plan.baseline_rollout:
        baseline = greedy_baseline(cfg, plan, rollouts, collector.greedy(rollouts, step), models=models,
                                   forwards=forwards, kl_coef=kl_coef).to(device)
    out = Prepared(batch=b, rollouts=rollouts, full_mask=b.loss_mask)
    penalties = None
    if plan.kl_in_reward:
        out.reward_kl = kl_divergence(b.old_logprobs, b.ref_logprobs, cfg.algorithm.kl.estimator, loss_mask=b.loss_mask)
        penalties = -(kl_coef * out.reward_kl)
    b.advantages, b.returns = compute_advantages(
        cfg.algorithm.advantage.name, rewards=rewards, loss_mask=b.loss_mask,
        group_ids=torch.tensor(rollouts.prompt_index, device=device), values=b.values, baseline_rewards=baseline,
        token_rewards=outcome_to_token_rewards(rewards, b.loss_mask), penalties=penalties,
        **cfg.algorithm.advantage.options(),
    )
    smooth(cfg, b, rollouts, acc)
    out.is_metrics = importance(cfg, plan, b)
    if cfg.algorithm.mask_truncated:
        # DAPO's overlong filtering: truncated responses leave the loss (and its denominators) but kept their
        # place in their group's baseline above.
        truncated = torch.tensor([f == "length" for f in rollouts.finish_reasons], device=device)
        b.loss_mask = b.loss_mask & ~truncated[:, None]
    return out


def smooth(cfg, b: TrainBatch, rollouts: RolloutBatch, acc: MetricSums) -> None:
    """Differential Smoothing's shaped advantages (algorithm.differential_smoothing), in place."""
    smoothing = cfg.algorithm.differential_smoothing
    if smoothing is None:
        return
    seq_logprobs = masked_sum(b.old_logprobs, b.loss_mask, dim=-1)
    shaped = differential_smoothing(b.advantages, b.loss_mask, seq_logprobs, rollouts.correct_tensor().to(b.loss_mask.device),
                                    gamma_p=smoothing.gamma_p, gamma_n=smoothing.gamma_n)
    acc.add("smoothing_shift", shaped - b.advantages, b.loss_mask)
    b.advantages = shaped


def importance(cfg, plan: StepPlan, b: TrainBatch) -> dict[str, Tensor]:
    """Batch-wide IS weights from the pi_old pass (their metrics returned), or, deferred, the tokens each
    micro-batch takes its own weights over."""
    if plan.deferred_is:
        b.is_mask = b.loss_mask
    if not plan.is_weights:
        return {}
    c = cfg.algorithm.is_correction
    b.is_weights, metrics = importance_weights(b.old_logprobs, b.sampler_logprobs, b.loss_mask, level=c.level,
                                               mode=c.mode, cap=c.cap)
    return metrics


def greedy_baseline(cfg, plan: StepPlan, rollouts: RolloutBatch, greedy: RolloutBatch, *, models: Models, forwards,
                    kl_coef: float) -> Tensor:
    """ReMax: each prompt's greedy response's return, broadcast to its samples [N].

    The greedy response is shaped exactly like the samples, so the baseline subtracts like from like: the same
    overlong penalty, and with KL in the reward the same -coef * sum_t kl_t of the greedy response (old policy
    against the reference, under the sampler's filter).
    """
    device = models.device
    gb = TrainBatch.from_rollout(greedy, models.pad_id, device)
    per_prompt = shaped_rewards(cfg, greedy.reward_tensor().to(device), gb.loss_mask)  # [P]
    if plan.kl_in_reward:
        # every rank computes these few greedy rows itself (not the step's batch: no shares)
        old = forwards.logprobs(models.policy, gb, everywhere=True)
        with reference_mode(models.lora):
            ref = forwards.logprobs(models.reference, gb, everywhere=True)
        kl = kl_divergence(old, ref, cfg.algorithm.kl.estimator, loss_mask=gb.loss_mask)
        per_prompt = per_prompt - kl_coef * masked_sum(kl, gb.loss_mask, dim=1)
    return per_prompt[torch.tensor(rollouts.prompt_index, device=device)]
