"""Precision choices of a run: which dtype the rollout engine samples in, and the IS correction that goes with a
lower-precision sampler, resolved before any work so that config.yaml records them."""

from __future__ import annotations

import torch

from rlvr.config import RunConfig
from rlvr.rollout.decoders import cpu_flags


def native_bf16(device: torch.device) -> bool:
    """Whether `device` multiplies bfloat16 natively: a CUDA GPU that supports it, or a CPU with AVX512_BF16
    or AMX-BF16 (where bfloat16 matrix products run about twice as fast as float32; elsewhere they are
    emulated and far slower)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def resolve_rollout_dtype(setting: str | None, model_dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """rollout.dtype as a torch dtype: None is the model's; "auto" bfloat16 where native (`native_bf16`)."""
    if setting is None:
        return model_dtype
    if setting == "auto":
        return torch.bfloat16 if native_bf16(device) else model_dtype
    return getattr(torch, setting)


def _no_copy_reason(cfg: RunConfig, distributed: bool) -> str | None:
    """Why the engine cannot sample from a separate lower-precision copy of the weights (None: it can)."""
    if cfg.rollout.engine != "hf":
        return "the vllm engine keeps its own weights"
    if cfg.model.lora is not None:
        return "LoRA"
    if distributed and cfg.train.fsdp:
        return "FSDP"
    return None


def resolve_automatic(cfg: RunConfig, device: torch.device, *, distributed: bool = False, log=print) -> RunConfig:
    """`cfg` with its automatic choices made, so that config.yaml records what the run does and `--resume`
    repeats it (also on another machine): `rollout.dtype: auto` becomes the dtype chosen here (bfloat16 where
    `native_bf16`, else the model's), and where the engine samples from a lower-precision copy or from weights
    up to rollout.max_staleness updates old the IS correction is switched on unless the recipe sets
    `algorithm.is_correction.enabled` itself. A resolved config resolves to itself. `model.device: auto` stays
    as it is: each rank resolves it to its own device."""
    model_dtype = getattr(torch, cfg.model.dtype)
    rollout_dtype = resolve_rollout_dtype(cfg.rollout.dtype, model_dtype, device)
    no_copy = _no_copy_reason(cfg, distributed)
    if rollout_dtype != model_dtype and no_copy is not None:
        if cfg.rollout.dtype != "auto":
            raise ValueError(f"rollout.dtype={cfg.rollout.dtype} (other than the model's {cfg.model.dtype}) works "
                             f"with the hf engine on a full (non-LoRA, non-FSDP) model for now, not with {no_copy}; "
                             "leave rollout.dtype unset or set it to auto")
        log(f"rollout dtype: {cfg.model.dtype} (rollout.dtype=auto: no separate rollout copy with {no_copy}; "
            f"the engine samples at the model's dtype)")
        rollout_dtype = model_dtype
    elif rollout_dtype == model_dtype and cfg.rollout.dtype == "auto":
        log(f"rollout dtype: {cfg.model.dtype} (rollout.dtype=auto: no native bfloat16 matrix products on "
            f"{device.type}; the engine shares the trainer's weights)")
    # Sampler and trainer differ (a lower-precision copy, or weights up to max_staleness updates old): correct for it.
    differ = rollout_dtype != model_dtype or cfg.rollout.max_staleness >= 1
    correct = differ and "enabled" not in cfg.algorithm.is_correction.model_fields_set
    if cfg.rollout.dtype != "auto" and not correct:
        return cfg
    cfg = cfg.model_copy(deep=True)
    if cfg.rollout.dtype == "auto":
        cfg.rollout.dtype = str(rollout_dtype).removeprefix("torch.")
    if correct:
        cfg.algorithm.is_correction.enabled = True
    return cfg
