"""The optimizer used by every trainer, and the RL trainer's optimizers with their learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch


def adamw(params: Iterable[torch.nn.Parameter], **kwargs) -> torch.optim.AdamW:
    """torch's AdamW, with its fused kernel where every parameter allows it (floating point, on CPU or
    CUDA): the same update up to float rounding (6e-8 apart after 3 steps of SmolLM2), and 3-6x faster
    than the default multi-tensor path on this CPU (benchmarks/NOTES.md, "vs TRL")."""
    params = list(params)
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    fused = fused and not any(type(p).__name__ == "DTensor" for p in params)  # FSDP2 shards: the foreach path
    return torch.optim.AdamW(params, fused=fused or None, **kwargs)


def lr_factor(optim_cfg, train_cfg) -> Callable[[int], float]:
    """The learning-rate multiplier of optimizer step k: linear warmup over optim.warmup_steps, then constant,
    linear or cosine decay over every optimizer step of the run (steps x epochs x mini-batches)."""
    o, t = optim_cfg, train_cfg
    total = max(1, t.steps * t.epochs * t.mini_batches)

    def factor(opt_step: int) -> float:
        if opt_step < o.warmup_steps:
            return (opt_step + 1) / (o.warmup_steps + 1)
        progress = (opt_step - o.warmup_steps) / max(1, total - o.warmup_steps)
        if o.scheduler == "linear":
            return max(0.0, 1.0 - progress)
        if o.scheduler == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return factor


class Optimizers:
    """The policy's AdamW and schedule, and the critic's (its own learning rate, the rest as the policy's)."""

    def __init__(self, cfg, model: torch.nn.Module, critic: torch.nn.Module | None = None):
        o = cfg.optim
        kwargs = dict(betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
        factor = lr_factor(cfg.optim, cfg.train)
        self.policy = adamw([p for p in model.parameters() if p.requires_grad], lr=o.lr, **kwargs)
        self.policy_schedule = torch.optim.lr_scheduler.LambdaLR(self.policy, factor)
        self.critic = self.critic_schedule = None
        if critic is not None:
            self.critic = adamw(critic.parameters(), lr=cfg.algorithm.critic.lr, **kwargs)
            self.critic_schedule = torch.optim.lr_scheduler.LambdaLR(self.critic, factor)

    def zero_grad(self) -> None:
        for optimizer in (self.policy, self.critic):
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        self.policy.step()
        self.policy_schedule.step()
        if self.critic is not None:
            self.critic.step()
            self.critic_schedule.step()

    @property
    def lr(self) -> float:
        return self.policy_schedule.get_last_lr()[0]

    def state_dict(self) -> dict[str, Any]:
        """The schedules (the optimizer moments are written apart: Topology.save_optimizers)."""
        out = {"scheduler": self.policy_schedule.state_dict()}
        if self.critic_schedule is not None:
            out["critic_scheduler"] = self.critic_schedule.state_dict()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy_schedule.load_state_dict(state["scheduler"])
        if self.critic_schedule is not None and "critic_scheduler" in state:
            self.critic_schedule.load_state_dict(state["critic_scheduler"])
