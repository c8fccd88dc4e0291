"""Building a run's trainer: the policy (full or LoRA), the reference and the critic, the task, the rollout engine
(with its own lower-precision copy of the weights where rollout.dtype asks for one), FSDP2 sharding."""

from __future__ import annotations

import copy

import torch

from rlvr.config import RunConfig
from rlvr.train.distributed import Topology
from rlvr.train.precision import resolve_automatic, resolve_rollout_dtype
from rlvr.train.prepare import Models
from rlvr.train.trainer import Trainer


def build(cfg: RunConfig, model_path: str | None = None, log=print, topology: Topology | None = None) -> Trainer:
    """Load the models, the task and the engine of a run (on this rank's device); `model_path`: a checkpoint's
    model/ directory to start from instead of cfg.model.name."""
    torch.manual_seed(cfg.seed)
    topology = topology or Topology()
    device = topology.device(cfg.model.device)
    cfg = resolve_automatic(cfg, device, distributed=topology.distributed, log=log)
    models = load_models(cfg, model_path, device, log=log)
    if topology.distributed and cfg.train.fsdp:
        for module in (models.policy, models.critic, models.reference if models.reference is not models.policy else None):
            if module is not None:
                topology.shard_module(module, reshard=cfg.train.fsdp_reshard)
    return Trainer(cfg, models, log=log, topology=topology)


def load_models(cfg: RunConfig, model_path: str | None, device: torch.device, log=print) -> Models:
    """The policy, reference, critic, task and engine, before any sharding (an engine with its own copy of the
    weights, vllm, starts from the full ones)."""
    from rlvr.models import load_model
    from rlvr.rollout import get_engine
    from rlvr.tasks import build_task
    from rlvr.train.critic import make_value_model

    dtype = getattr(torch, cfg.model.dtype)
    load = dict(dtype=dtype, device=str(device), trust_remote_code=cfg.model.trust_remote_code,
                cache_dir=cfg.model.cache_dir)
    peft_model = None
    if cfg.model.lora is not None:
        from rlvr.models.lora import apply_lora, is_adapter_dir, load_adapter

        base, tokenizer = load_model(cfg.model.name, **load)
        if model_path is not None and is_adapter_dir(model_path):
            peft_model = load_adapter(base, model_path)  # resuming: the checkpoint holds the adapter only
        else:
            lora = cfg.model.lora
            peft_model = apply_lora(base, rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout,
                                    target_modules=lora.target_modules)
        model = peft_model.get_base_model()  # the same HF model, its linear layers now with adapters
    else:
        model, tokenizer = load_model(model_path or cfg.model.name, **load)
    ref_model = reference_model(cfg, model, model_path, lora=peft_model is not None, load=load)
    critic = (make_value_model(model, checkpoint_activations=cfg.algorithm.critic.checkpoint_activations)
              if cfg.algorithm.critic.enabled else None)
    task = build_task(cfg.task)
    engine_model = model
    rollout_dtype = resolve_rollout_dtype(cfg.rollout.dtype, dtype, device)  # resolved: never "auto" here
    eval_engine = None
    if cfg.rollout.worker_process:
        engine = worker_engine(cfg, model, tokenizer, rollout_dtype, log=log)
        # held-out evaluation on the trainer's own weights (the worker's may be older); engine_kwargs are the
        # worker engine's, and the hf engine's only where that is hf
        eval_engine = get_engine("hf", model, tokenizer, **(cfg.rollout.engine_kwargs if cfg.rollout.engine == "hf" else {}))
    else:
        if rollout_dtype != dtype:
            # The engine's own lower-precision copy, refreshed by every push (rlvr.rollout.hf update_weights).
            engine_model = copy.deepcopy(model).to(rollout_dtype).eval().requires_grad_(False)
            log(f"rollout dtype: {str(rollout_dtype).removeprefix('torch.')} (trainer: {cfg.model.dtype}); "
                f"IS correction {'on' if cfg.algorithm.is_correction.enabled else 'off'}")
        engine = get_engine(cfg.rollout.engine, engine_model, tokenizer, **cfg.rollout.engine_kwargs)
    return Models(policy=model, tokenizer=tokenizer, task=task, engine=engine, reference=ref_model, critic=critic,
                  lora=peft_model, eval_engine=eval_engine)


def worker_engine(cfg: RunConfig, model, tokenizer, rollout_dtype: torch.dtype, log=print):
    """The engine in a rollout worker process of its own (rlvr.rollout.process), and the CPU cores split between
    it and the trainer: rollout.worker_threads unset, half for the worker and the rest for the trainer; set,
    that many for the worker and the trainer's own threads left as they are (they may then share cores)."""
    import os

    from rlvr.rollout.process import ProcessEngine

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = cfg.rollout.worker_threads or max(1, cores // 2)
    if cfg.rollout.worker_threads is None and torch.get_num_threads() + threads > cores:
        torch.set_num_threads(max(1, cores - threads))
    log(f"rollout worker: a process of its own ({cfg.rollout.engine} engine, {threads} thread(s); the trainer "
        f"{torch.get_num_threads()}); max_staleness {cfg.rollout.max_staleness}")
    return ProcessEngine(model, tokenizer, engine=cfg.rollout.engine, dtype=rollout_dtype, threads=threads,
                         timeout_s=cfg.rollout.worker_timeout_s, engine_kwargs=cfg.rollout.engine_kwargs)


def reference_model(cfg: RunConfig, model, model_path: str | None, *, lora: bool, load: dict):
    """The KL term's reference, the initial policy (None without a KL term): with LoRA the same model with its
    adapters switched off; else a frozen copy, also when resuming from a later checkpoint."""
    if cfg.algorithm.kl.coef <= 0:
        return None
    if lora:
        return model  # the base weights with the adapters switched off: no second copy
    if model_path is None:
        ref_model = copy.deepcopy(model)
    else:
        from rlvr.models import load_model

        ref_model, _ = load_model(cfg.model.name, **load)
    return ref_model.eval().requires_grad_(False)
