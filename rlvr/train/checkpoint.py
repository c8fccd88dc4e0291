"""Checkpoints: the policy in Hugging Face format plus everything needed to resume exactly.

Layout: RUN_DIR/checkpoints/step_000010/{model/, trainer.pt} and RUN_DIR/checkpoints/latest (a text
file naming the newest complete checkpoint). A checkpoint is written into a temporary directory and
renamed into place, then `latest` is replaced atomically, so a crash while writing never leaves a
half-written checkpoint as the latest.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlvr.models import save_model


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


OPTIMIZER_DIR = "optimizer"
"""A checkpoint's optimizer states, in torch.distributed.checkpoint's format (every rank's shards)."""


def staging_dir(run_dir: str | Path, step: int) -> Path:
    """Where checkpoint `step` is assembled (by every rank: the optimizer shards) before it is renamed into place."""
    return Path(run_dir) / "checkpoints" / f".step_{step:06d}.staging"


def save_checkpoint(run_dir: str | Path, step: int, model, tokenizer, trainer_state: dict[str, Any], keep_last: int = 2,
                    model_state: dict | None = None, staging: Path | None = None) -> Path:
    """Write checkpoint `step`; `model_state`: the full weights to save instead of `model.state_dict()`;
    `staging`: a directory already holding parts of it (the optimizer states), completed here and renamed."""
    ckpt_root = Path(run_dir) / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:06d}"
    final = ckpt_root / name
    tmp = staging if staging is not None else ckpt_root / f".{name}.tmp-{os.getpid()}"
    if staging is None:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    if hasattr(model, "peft_config"):  # LoRA: the adapter only (rlvr export merges it into the base)
        from rlvr.models.lora import save_adapter

        save_adapter(model, tokenizer, tmp / "model", state_dict=model_state)
    else:
        save_model(model, tokenizer, tmp / "model", state_dict=model_state)
    torch.save({**trainer_state, "step": step, "rng": rng_state()}, tmp / "trainer.pt")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _atomic_write_text(ckpt_root / "latest", name + "\n")
    complete = sorted(p for p in ckpt_root.glob("step_*") if p.is_dir())
    for old in complete[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpt_root = Path(run_dir) / "checkpoints"
    pointer = ckpt_root / "latest"
    if not pointer.exists():
        return None
    path = ckpt_root / pointer.read_text().strip()
    if not (path / "trainer.pt").exists() or not (path / "model").is_dir():  # (optimizer/ is optional)
        raise FileNotFoundError(
            f"{pointer} names {path.name}, which is incomplete or missing; "
            "remove the pointer to start over, or restore the checkpoint directory"
        )
    return path


def load_trainer_state(path: str | Path) -> dict[str, Any]:
    return torch.load(Path(path) / "trainer.pt", map_location="cpu", weights_only=False)


# --- an RL run's checkpoints (rlvr.train.runner) ---------------------------------------------------------------


def _policy_weights(trainer) -> dict | None:
    """The policy's full weights to save when they are sharded (a collective with FSDP), else None (the model's
    own state dict)."""
    m, topo = trainer.models, trainer.topo
    if m.policy not in trainer.sharded:
        return None
    if m.lora is not None:
        from rlvr.models.lora import is_adapter_weight

        # the adapter only, gathered from its shards, under the PeftModel's names
        return {k: v.cpu() for k, v in topo.full_weights(m.lora, keep=is_adapter_weight)}
    weights = topo.module_state(m.policy)
    if getattr(m.policy.config, "tie_word_embeddings", False):
        weights.pop("lm_head.weight", None)  # tied to the input embeddings: written once, as HF does
    return weights


def save_run_checkpoint(trainer, stream, run_dir: Path, step: int) -> Path | None:
    """Checkpoint `step` of an RL run, written by every rank together: the trainer's state and the prompt stream's
    (trainer.pt), the policy (model/), every rank's optimizer shards (optimizer/, with checkpoint.optimizer).
    Returns the checkpoint's path on rank 0, None on the others."""
    topo, cfg = trainer.topo, trainer.cfg
    state = {**trainer.state_dict(), "data": trainer.collector.stream_state(stream)}  # a collective with FSDP (the critic's weights)
    weights = _policy_weights(trainer)
    staging = staging_dir(run_dir, step)
    if topo.is_main:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
    topo.barrier()
    if cfg.checkpoint.optimizer:  # every rank writes its shards of the optimizer states (DCP)
        topo.save_optimizers(staging / OPTIMIZER_DIR, trainer.optimizers_by_name())
    topo.barrier()
    path = None
    if topo.is_main:
        m = trainer.models
        path = save_checkpoint(run_dir, step, m.lora or m.policy, m.tokenizer, state, cfg.checkpoint.keep_last,
                               model_state=weights, staging=staging)
    topo.barrier()
    return path


def restore_run_checkpoint(trainer, stream, state: dict[str, Any], ckpt: Path | None = None, log=print) -> None:
    """Resume an RL run from checkpoint `ckpt` (its trainer.pt already loaded as `state`): optimizer moments,
    the trainer's state, the prompt stream and the random generators."""
    optimizers = trainer.optimizers_by_name()
    if ckpt is not None and (ckpt / OPTIMIZER_DIR).is_dir():
        trainer.topo.load_optimizers(ckpt / OPTIMIZER_DIR, optimizers)  # every rank its own shards
    elif "optimizer" in state:  # a checkpoint of an older rlvr: the full states inside trainer.pt
        for name, key in (("policy", "optimizer"), ("critic", "critic_optimizer")):
            if name in optimizers and key in state:
                optimizers[name][1].load_state_dict(state[key])
    else:
        log("this checkpoint holds no optimizer state (checkpoint.optimizer=false): the optimizer restarts from "
            "zero moments, so the resumed run will not match an uninterrupted one exactly")
    trainer.load_state_dict(state)
    stream.load_state_dict(state["data"])
    set_rng_state(state["rng"])
