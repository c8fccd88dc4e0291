"""The optimizer used by every trainer."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def adamw(params: Iterable[torch.nn.Parameter], **kwargs) -> torch.optim.AdamW:
    """torch's AdamW, with its fused kernel where every parameter allows it (floating point, on CPU or
    CUDA): the same update up to float rounding (6e-8 apart after 3 steps of SmolLM2), and 3-6x faster
    than the default multi-tensor path on this CPU (benchmarks/NOTES.md, "vs TRL")."""
    params = list(params)
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    fused = fused and not any(type(p).__name__ == "DTensor" for p in params)  # FSDP2 shards: the foreach path
    return torch.optim.AdamW(params, fused=fused or None, **kwargs)
