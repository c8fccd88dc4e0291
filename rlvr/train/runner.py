"""A whole RL run: set-up, the step loop, evaluation, checkpoints, resume, the run directory."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch

from rlvr.config import RunConfig, to_yaml
from rlvr.logging.jsonl import JsonlWriter
from rlvr.rollout.decoders import cpu_flags
from rlvr.tasks import check_reward_fields, close_rewards
from rlvr.train.checkpoint import (
    OPTIMIZER_DIR,
    latest_checkpoint,
    load_trainer_state,
    save_checkpoint,
    set_rng_state,
    staging_dir,
)
from rlvr.train.console import checkpoint_line, eval_line, finish, progress_bar, step_line
from rlvr.train.data import PromptStream
from rlvr.train.distributed import Topology
from rlvr.train.rl import RLStep
from rlvr.train.seeds import EVAL, derive_seed


class RunDirExists(FileExistsError):
    pass


def completed_steps(run_dir: Path) -> int:
    """How many training steps `run_dir` has logged (0 for a run that failed before its first step)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = 0
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "reward_mean" in row:
            steps = max(steps, int(row.get("step", 0)))
    return steps


def _free_sibling(run_dir: Path) -> Path:
    i = 2
    while (run_dir.parent / f"{run_dir.name}-{i}").exists():
        i += 1
    return run_dir.parent / f"{run_dir.name}-{i}"


def prepare_run_dir(cfg: RunConfig, *, resume: bool, overwrite: bool, console=None) -> Path:
    """The run directory, made (or replaced) with config.yaml in it.

    An existing directory that holds no completed step (a run that failed while starting) is reused, so
    the corrected command just works; one with completed steps needs --resume or --overwrite.
    """
    run_dir = Path(cfg.run_dir or Path("runs") / cfg.name)
    if resume:
        if not (run_dir / "config.yaml").exists():
            raise FileNotFoundError(f"cannot resume: {run_dir}/config.yaml not found")
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        done = completed_steps(run_dir)
        if done and not overwrite:
            raise RunDirExists(
                f"run directory {run_dir} already holds {done} completed step(s); pass --resume {run_dir} to "
                f"continue it, --overwrite to replace it, or run_dir={_free_sibling(run_dir)} for a new one"
            )
        if not done and console is not None:
            console.print(f"reusing {run_dir} (it holds no completed step)")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    return run_dir


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
    `native_bf16`, else the model's), and where the engine samples from a lower-precision copy the IS
    correction is switched on unless the recipe sets `algorithm.is_correction.enabled` itself. A resolved
    config resolves to itself. `model.device: auto` stays as it is: each rank resolves it to its own device."""
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
    correct = rollout_dtype != model_dtype and "enabled" not in cfg.algorithm.is_correction.model_fields_set
    if cfg.rollout.dtype != "auto" and not correct:
        return cfg
    cfg = cfg.model_copy(deep=True)
    if cfg.rollout.dtype == "auto":
        cfg.rollout.dtype = str(rollout_dtype).removeprefix("torch.")
    if correct:
        cfg.algorithm.is_correction.enabled = True  # sampler and trainer differ: correct for it
    return cfg


def build(cfg: RunConfig, model_path: str | None = None, log=print, topology: Topology | None = None) -> RLStep:
    """Load the models, the task and the engine of a run (on this rank's device)."""
    from rlvr.models import load_model
    from rlvr.rollout import get_engine
    from rlvr.tasks import build_task
    from rlvr.train.critic import make_value_model

    torch.manual_seed(cfg.seed)
    topology = topology or Topology()
    dtype = getattr(torch, cfg.model.dtype)
    device = topology.device(cfg.model.device)
    cfg = resolve_automatic(cfg, device, distributed=topology.distributed, log=log)
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
    ref_model = None
    if cfg.algorithm.kl.coef > 0:
        if peft_model is not None:
            ref_model = model  # the base weights with the adapters switched off: no second copy
        elif model_path is None:
            # The reference is the initial policy, also when resuming from a later checkpoint.
            ref_model = copy.deepcopy(model)
        else:
            ref_model, _ = load_model(cfg.model.name, **load)
        if peft_model is None:
            ref_model.eval().requires_grad_(False)
    critic = (make_value_model(model, checkpoint_activations=cfg.algorithm.critic.checkpoint_activations)
              if cfg.algorithm.critic.enabled else None)
    task = build_task(cfg.task)
    engine_model = model
    rollout_dtype = resolve_rollout_dtype(cfg.rollout.dtype, dtype, device)  # resolved: never "auto" here
    if rollout_dtype != dtype:
        # The engine's own lower-precision copy, refreshed by every push (rlvr.rollout.hf update_weights).
        engine_model = copy.deepcopy(model).to(rollout_dtype).eval().requires_grad_(False)
        log(f"rollout dtype: {str(rollout_dtype).removeprefix('torch.')} (trainer: {cfg.model.dtype}); "
            f"IS correction {'on' if cfg.algorithm.is_correction.enabled else 'off'}")
    # The engine before the sharding: one with its own copy of the weights (vllm) starts from the full ones.
    engine = get_engine(cfg.rollout.engine, engine_model, tokenizer, **cfg.rollout.engine_kwargs)
    if topology.distributed and cfg.train.fsdp:
        for module in (model, critic, ref_model if ref_model is not model else None):
            if module is not None:
                topology.shard_module(module, reshard=cfg.train.fsdp_reshard)
    return RLStep(cfg, model, tokenizer, task, engine, ref_model=ref_model, critic=critic, log=log, topology=topology,
                  lora=peft_model)


def held_out_eval(trainer: RLStep, examples: list[Any], step: int) -> dict[str, float]:
    """Held-out metrics of the current policy: sampled at the eval temperature, and greedy.

    - Common random numbers: every evaluation of a run uses the same sampling seed, so sample j of a
      problem draws the same uniforms at every step and step-to-step differences are paired.
    - A held-out set that repeats each distinct problem c times (the generated tasks' test splits) is
      sampled as c samples of each distinct problem: the same draws' worth of work, plus pass@k for k
      up to c. Otherwise every example is sampled once. Intervals count distinct problems.
    - Logged: eval_accuracy (mean@n, the fraction of samples correct) with its interval,
      eval_pass@k, eval_entropy (nats per token of the sampled responses, at the eval temperature),
      eval_response_len_mean, and eval_accuracy_greedy.
    """
    from rlvr.eval import evaluate
    from rlvr.eval.runner import problem_key

    cfg = trainer.cfg
    common = dict(
        max_new_tokens=cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens,
        template=trainer.task.template, engine=trainer.engine, seed=derive_seed(cfg.seed, EVAL),
    )
    temperature = cfg.eval.temperature if cfg.eval.temperature is not None else cfg.rollout.temperature
    distinct: dict[Any, Any] = {}
    counts: dict[Any, int] = {}
    for ex in examples:
        key = problem_key(ex)
        distinct.setdefault(key, ex)
        counts[key] = counts.get(key, 0) + 1
    repeats = set(counts.values())
    if len(repeats) == 1 and (c := repeats.pop()) > 1:
        problems, n = list(distinct.values()), c
    else:
        problems, n = list(examples), 1
    ks = sorted({k for k in (1, 2, 4, 8, 16, 32, 64, n) if k <= n})
    sampled = evaluate(trainer.model, trainer.tokenizer, trainer.task, problems, n=n, k=ks, temperature=temperature,
                       with_entropy=True, **common)
    m = sampled.metrics
    row: dict[str, float] = {
        "eval_accuracy": m[f"mean@{n}"],
        "eval_accuracy_ci_low": m[f"mean@{n}_ci_low"],
        "eval_accuracy_ci_high": m[f"mean@{n}_ci_high"],
    }
    for k in ks:
        row[f"eval_pass@{k}"] = m[f"pass@{k}"]
    row["eval_entropy"] = m.get("entropy")
    row["eval_response_len_mean"] = m["response_len_mean"]
    if cfg.eval.greedy:
        # Greedy decoding gives a repeated problem the same answer every time, so each distinct problem
        # is decoded once and weighted by how often the held-out set holds it (same figure, less work).
        greedy = evaluate(trainer.model, trainer.tokenizer, trainer.task, list(distinct.values()), n=1, k=(1,),
                          temperature=0.0, with_entropy=False, **common)
        correct = {s["problem_id"]: float(s["correct"]) for s in greedy.samples}
        by_key = dict(zip(distinct, (correct[ex.id] for ex in distinct.values())))
        row["eval_accuracy_greedy"] = sum(by_key[k] * c for k, c in counts.items()) / len(examples)
    return row


def trainer_optimizers(trainer: RLStep) -> dict[str, tuple[Any, Any]]:
    """The optimizers a checkpoint holds (checkpoint.optimizer), by name, each with the module it steps."""
    out = {"policy": (trainer.model, trainer.optimizer)}
    if trainer.critic is not None:
        out["critic"] = (trainer.critic, trainer.critic_optimizer)
    return out


def trainer_state(trainer: RLStep, stream: PromptStream) -> dict[str, Any]:
    """What a checkpoint's trainer.pt holds; the optimizer states are written apart, with
    torch.distributed.checkpoint (`Topology.save_optimizers`, into the checkpoint's optimizer/ directory)."""
    topo = trainer.topo
    state = {
        "scheduler": trainer.scheduler.state_dict(),
        "data": stream.state_dict(),
        "kl_coef": trainer.kl_coef,
        "nonfinite_steps": trainer.nonfinite_steps,
        "no_signal_steps": trainer.no_signal_steps,
        "no_signal_in_row": trainer.no_signal_in_row,
        "reward_errors": trainer.reward_errors.count,
        "reward_timeouts": trainer.reward_errors.timeouts,
        "dynamic_sampling": {"seen": trainer.ds_seen, "kept": trainer.ds_kept},
        "policy_version": trainer.policy_version,
        "optimizer_format": "dcp" if trainer.cfg.checkpoint.optimizer else None,
    }
    if trainer.critic is not None:
        state["critic"] = topo.module_state(trainer.critic)
        state["critic_scheduler"] = trainer.critic_scheduler.state_dict()
    return state


def restore(trainer: RLStep, stream: PromptStream, state: dict[str, Any], log=print, ckpt: Path | None = None) -> None:
    optimizers = trainer_optimizers(trainer)
    if ckpt is not None and (ckpt / OPTIMIZER_DIR).is_dir():
        trainer.topo.load_optimizers(ckpt / OPTIMIZER_DIR, optimizers)  # every rank its own shards
    elif "optimizer" in state:  # a checkpoint of an older rlvr: the full states inside trainer.pt
        for name, key in (("policy", "optimizer"), ("critic", "critic_optimizer")):
            if name in optimizers and key in state:
                optimizers[name][1].load_state_dict(state[key])
    else:
        log("this checkpoint holds no optimizer state (checkpoint.optimizer=false): the optimizer restarts from "
            "zero moments, so the resumed run will not match an uninterrupted one exactly")
    trainer.scheduler.load_state_dict(state["scheduler"])
    stream.load_state_dict(state["data"])
    trainer.kl_coef = state["kl_coef"]
    trainer.nonfinite_steps = state.get("nonfinite_steps", state.get("skipped_steps", 0))
    trainer.no_signal_steps = state.get("no_signal_steps", 0)
    trainer.no_signal_in_row = state.get("no_signal_in_row", 0)
    trainer.reward_errors.count = state["reward_errors"]
    trainer.reward_errors.timeouts = state.get("reward_timeouts", 0)
    trainer.policy_version = int(state.get("policy_version", 0))
    with trainer.topo.full_params(trainer.sharded):
        trainer.push_weights()
    ds = state.get("dynamic_sampling", {})
    trainer.ds_seen, trainer.ds_kept = int(ds.get("seen", 0)), int(ds.get("kept", 0))
    if trainer.critic is not None:
        trainer.topo.load_module_state(trainer.critic, state["critic"])
        if "critic_scheduler" in state:
            trainer.critic_scheduler.load_state_dict(state["critic_scheduler"])
    set_rng_state(state["rng"])


def train(cfg: RunConfig, *, resume: bool = False, overwrite: bool = False, console=None, progress: bool = True,
          topology: Topology | None = None) -> Path:
    """Run `cfg` to its last step; returns the run directory.

    Under torchrun every rank runs this (the topology comes from the environment); rank 0 alone writes
    the run directory, and the others wait for it at each checkpoint and evaluation.
    """
    from rich.console import Console

    own_topology = topology is None
    topo = topology or Topology.from_env(timeout_s=cfg.train.collective_timeout_s, device=cfg.model.device)
    run_dir = Path(cfg.run_dir or Path("runs") / cfg.name)
    try:
        return _train(cfg, topo, resume=resume, overwrite=overwrite, console=console or Console(soft_wrap=True),
                      progress=progress)
    except Exception as exc:
        # Under torchrun, a rank whose collective broke because another rank died stops with that rank's
        # error (one line) rather than a misleading "connection reset" traceback of its own.
        peer = topo.peer_failure(run_dir) if topo.distributed and not isinstance(exc, RunDirExists) else None
        if peer is not None:
            raise peer from None
        topo.report_failure(run_dir, exc)
        raise
    finally:
        if own_topology:
            topo.close()


def _train(cfg: RunConfig, topo: Topology, *, resume: bool, overwrite: bool, console, progress: bool) -> Path:
    from rich.console import Console

    if cfg.task.name.startswith("gym:"):
        return _train_gym(cfg, topo, resume=resume, overwrite=overwrite, console=console)
    main = topo.is_main
    if not main:
        console, progress = Console(quiet=True), False
    run_dir = Path(cfg.run_dir or Path("runs") / cfg.name)
    # config.yaml records the automatic choices as made (build resolves them again, to the same values)
    cfg = resolve_automatic(cfg, topo.device(cfg.model.device), distributed=topo.distributed, log=console.print)
    if main:
        run_dir = prepare_run_dir(cfg, resume=resume, overwrite=overwrite, console=console)
        console.print(f"run directory: {run_dir}")
    elif resume and not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(f"cannot resume: {run_dir}/config.yaml not found")
    topo.barrier()  # rank 0 has made (or replaced) the run directory
    if main and (run_dir / "errors").is_dir():
        shutil.rmtree(run_dir / "errors")  # reports of an earlier, failed attempt
    topo.barrier()
    ckpt = latest_checkpoint(run_dir) if resume else None
    t_load = time.perf_counter()
    trainer = build(cfg, model_path=str(ckpt / "model") if ckpt else None, log=console.print, topology=topo)
    train_examples = trainer.task.examples("train")
    if train_examples:
        check_reward_fields(trainer.task, train_examples[0])
    eval_examples = trainer.task.examples("test", limit=cfg.eval.size) if cfg.eval.every else []
    stream = PromptStream(train_examples, cfg.seed)
    metrics_log, samples_log = JsonlWriter(run_dir / "metrics.jsonl"), JsonlWriter(run_dir / "samples.jsonl")
    start = 0
    if ckpt is not None:
        state = load_trainer_state(ckpt)
        restore(trainer, stream, state, log=lambda message: console.print(message, soft_wrap=True), ckpt=ckpt)
        start = state["step"]
        if main:
            metrics_log.truncate_after(start)
            samples_log.truncate_after(start)
        console.print(f"resumed {run_dir} from {ckpt.name} (step {start})")
    trackers = _trackers(cfg, run_dir, main, resumed_at=start if ckpt is not None else None)
    with contextlib.closing(trackers), contextlib.closing(trainer.engine), _closing_rewards(trainer.task):
        ranks = f" on {topo.world_size} ranks ({topo.backend})" if topo.distributed else ""
        console.print(f"loaded in {time.perf_counter() - t_load:.1f}s{ranks}")

        def checkpoint(step: int) -> None:
            state = trainer_state(trainer, stream)  # a collective with FSDP (the critic's weights are gathered)
            weights = None
            if trainer.model in trainer.sharded and trainer.lora is not None:
                from rlvr.models.lora import is_adapter_weight

                # the adapter only, gathered from its shards (a collective), under the PeftModel's names
                weights = dict(topo.full_weights(trainer.lora, keep=is_adapter_weight))
                weights = {k: v.cpu() for k, v in weights.items()}
            elif trainer.model in trainer.sharded:
                weights = topo.module_state(trainer.model)  # idem
            if weights is not None and trainer.lora is None and getattr(trainer.model.config, "tie_word_embeddings", False):
                weights.pop("lm_head.weight", None)  # tied to the input embeddings: written once, as HF does
            staging = staging_dir(run_dir, step)
            if main:
                if staging.exists():
                    shutil.rmtree(staging)
                staging.mkdir(parents=True)
            topo.barrier()
            if cfg.checkpoint.optimizer:  # every rank writes its shards of the optimizer states (DCP)
                topo.save_optimizers(staging / OPTIMIZER_DIR, trainer_optimizers(trainer))
            topo.barrier()
            if main:
                path = save_checkpoint(run_dir, step, trainer.lora or trainer.model, trainer.tokenizer, state,
                                       cfg.checkpoint.keep_last, model_state=weights, staging=staging)
                console.print(checkpoint_line(path), soft_wrap=True)
            topo.barrier()

        live: dict[str, Any] = {}  # the progress bar and its task, once they exist

        def evaluate_now(step: int) -> None:
            if not eval_examples:
                return
            if live:
                live["bar"].update(live["task"], description=f"evaluating {len(eval_examples)} problems")
            with topo.full_params(trainer.sharded):  # rank 0 evaluates on the gathered parameters
                if main:
                    row = {"step": step, **held_out_eval(trainer, eval_examples, step)}
                    metrics_log.write(row)
                    trackers.log_metrics(row, step)
                    console.print(eval_line(row), soft_wrap=True)
                topo.barrier()
            if live:
                live["bar"].update(live["task"], description="step")

        if start == 0 and cfg.eval.every:
            evaluate_now(0)
        last: dict[str, float] = {}
        step = start
        # A live bar on a terminal; otherwise (redirected to a file, --no-progress) one line per step.
        show_bar = progress and console.is_terminal
        bar = progress_bar(console, enabled=show_bar)
        with bar, GracefulInterrupt() as interrupt:
            task_id = bar.add_task("step", total=cfg.train.steps, completed=start, reward="-", acc="-", step_s="-")
            live.update(bar=bar, task=task_id)
            fault = os.environ.get("RLVR_FAULT_RAISE")  # "RANK:STEP": the tests' failing-rank injection
            for step in range(start + 1, cfg.train.steps + 1):
                if fault and fault == f"{topo.rank}:{step}":
                    raise RuntimeError(f"injected failure on rank {topo.rank} at step {step} (RLVR_FAULT_RAISE)")
                metrics = trainer.run(stream, step)
                last = {"step": step, **metrics}
                if main:
                    metrics_log.write(last)
                    trackers.log_metrics(last, step)
                    _log_samples(samples_log, trainer, step, cfg.log_samples)
                bar.update(task_id, advance=1, reward=f"{metrics['reward_mean']:.3f}", acc=f"{metrics['accuracy']:.2f}",
                           step_s=f"{metrics['step_time_s']:.1f}")
                if not show_bar and main:
                    console.print(step_line(step, cfg.train.steps, metrics), soft_wrap=True)
                if cfg.eval.every and (step % cfg.eval.every == 0 or step == cfg.train.steps):
                    evaluate_now(step)
                # Every rank stops at the same step when any of them was asked to (Ctrl-C, SIGTERM).
                if topo.all_reduce_max(1.0 if interrupt.requested else 0.0) > 0:
                    console.print(f"{interrupt.reason or 'interrupted'}: checkpoint at step {step}; "
                                  f"continue with: rlvr train --resume {run_dir}")
                    checkpoint(step)
                    if interrupt.reason == "SIGTERM":
                        return run_dir
                    raise KeyboardInterrupt
                if cfg.checkpoint.every and step % cfg.checkpoint.every == 0 and step != cfg.train.steps:
                    checkpoint(step)
        checkpoint(cfg.train.steps)
        if main:
            trackers.log_images(finish(run_dir, console, metrics_log), cfg.train.steps)
        return run_dir


@contextlib.contextmanager
def _closing_rewards(task):
    """Stop the worker processes of the task's user rewards when the run ends."""
    try:
        yield
    finally:
        close_rewards(task)


def _trackers(cfg: RunConfig, run_dir: Path, main: bool, resumed_at: int | None):
    from rlvr.logging.trackers import Trackers, make_trackers

    if not main:
        return Trackers([])
    return make_trackers(cfg.logging.backends, run_dir, cfg.model_dump(mode="json"), to_yaml(cfg),
                         project=cfg.logging.project, name=cfg.name,
                         resume_step=None if resumed_at is None else resumed_at + 1)


def gym_algorithm(cfg: RunConfig):
    """The recipe's algorithm as rlvr.envs.gym.GymAlgorithm; settings that have no meaning for an MLP policy
    in a classic environment are refused here, before any work, each with the override that turns it off."""
    from rlvr.envs.gym import GymAlgorithm

    alg = cfg.algorithm
    unsupported = {
        "algorithm.kl.coef=0": alg.kl.coef > 0,  # no reference policy
        "algorithm.is_correction.enabled=false": alg.is_correction.enabled,  # the sampler is the trainer
        "algorithm.dynamic_sampling.enabled=false": alg.dynamic_sampling.enabled,
        "algorithm.overlong.enabled=false": alg.overlong.enabled,
        "algorithm.mask_truncated=false": alg.mask_truncated,
        "algorithm.differential_smoothing=null": alg.differential_smoothing is not None,  # no `correct`
        "algorithm.layer_policy=null": alg.layer_policy is not None,
        "algorithm.routing_replay=none": alg.routing_replay != "none",
        "model.lora=null": cfg.model.lora is not None,
    }
    bad = [fix for fix, on in unsupported.items() if on]
    if bad:
        raise ValueError(f"{cfg.task.name} trains an MLP policy, for which these settings have no meaning: "
                         f"set {', '.join(bad)}")
    critic = alg.critic
    return GymAlgorithm(
        estimator=alg.advantage.name, options=alg.advantage.options(), loss=alg.loss.name,
        loss_params=alg.loss.options(), aggregation=alg.aggregation, constant=alg.aggregation_constant,
        epochs=cfg.train.epochs, mini_batches=cfg.train.mini_batches, entropy_coef=alg.entropy_coef,
        value_lr=critic.lr,
        # the LLM default clip (0.2, for rewards in [0, 1]) only when the recipe asks for it explicitly
        value_clip=critic.clip_range if "clip_range" in critic.model_fields_set else None,
    )


def _train_gym(cfg: RunConfig, topo: Topology, *, resume: bool, overwrite: bool, console) -> Path:
    """`rlvr train task.name=gym:ENV_ID ...`: a classic RL environment on the same core (rlvr.envs.gym).

    The recipe maps onto it: rollout.prompts_per_step start states x rollout.group_size episodes per
    iteration (train.steps iterations), rollout.max_new_tokens the episode step limit, the preset's
    advantage estimator, policy loss, aggregation and update schedule (train.epochs x train.mini_batches)
    with their options, the entropy bonus, optim.lr, the critic's lr (gae: a value network), task.kwargs for
    gymnasium.make. The run directory gets config.yaml, metrics.jsonl, plots and the final policy (and value
    network) in model/ (one process; no intermediate checkpoints: a run takes seconds)."""
    from rlvr.envs.gym import train_gym

    if resume or topo.distributed:
        raise ValueError("gym runs take seconds: run them again instead of --resume, and in one process")
    algo = gym_algorithm(cfg)
    run_dir = prepare_run_dir(cfg, resume=False, overwrite=overwrite, console=console)
    console.print(f"run directory: {run_dir}")
    metrics_log = JsonlWriter(run_dir / "metrics.jsonl")

    def record(step: int, metrics: dict) -> None:
        metrics_log.write({"step": step, **metrics})
        console.print(f"step {step}: mean return {metrics['reward_mean']:.1f}, episode length "
                      f"{metrics['response_len_mean']:.1f}")

    result = train_gym(cfg.task.name[4:], algo, iterations=cfg.train.steps, starts=cfg.rollout.prompts_per_step,
                       group_size=cfg.rollout.group_size, lr=cfg.optim.lr, max_steps=cfg.rollout.max_new_tokens,
                       seed=cfg.seed, env_kwargs=dict(cfg.task.kwargs), on_iteration=record)
    (run_dir / "model").mkdir(exist_ok=True)
    torch.save(result.policy.state_dict(), run_dir / "model" / "policy.pt")
    if result.critic is not None:
        torch.save(result.critic.state_dict(), run_dir / "model" / "critic.pt")
    finish(run_dir, console, metrics_log)
    return run_dir


class GracefulInterrupt:
    """The first Ctrl-C (or SIGTERM, a cluster's preemption notice) lets the current step finish, then the
    loop checkpoints and stops (exit 130 for Ctrl-C, 0 for SIGTERM); a second Ctrl-C interrupts at once
    (without a checkpoint of the half-done step)."""

    def __init__(self):
        self.requested = False
        self.reason: str | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.reason = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
        print(f"\n{self.reason}: finishing this step, then writing a checkpoint"
              + (" (Ctrl-C again to stop now)" if signum == signal.SIGINT else ""), flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        return False


def _log_samples(writer: JsonlWriter, trainer: RLStep, step: int, limit: int) -> None:
    scored = trainer.last_scored
    if scored is None or limit == 0:
        return
    r = scored.rollout
    for i in range(min(limit, len(scored.responses))):
        example = scored.examples[r.prompt_index[i]]
        writer.write({
            "step": step, "prompt_id": getattr(example, "id", None), "prompt": getattr(example, "question", None),
            "answer": str(getattr(example, "answer", "")), "response": scored.responses[i],
            "reward": float(scored.rewards[i]), "correct": bool(scored.correct[i]), "finish_reason": r.finish_reasons[i],
        })
