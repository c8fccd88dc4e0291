"""A whole RL run: start it (or resume it), then loop over its steps with evaluations and checkpoints.

The parts live in their own modules: building the trainer (rlvr.train.build), precision choices
(rlvr.train.precision), held-out evaluation (rlvr.train.held_out), checkpoints (rlvr.train.checkpoint), the run
directory (rlvr.train.run_dir), graceful stops (rlvr.train.interrupt). Under torchrun every rank runs this (the
topology comes from the environment); rank 0 alone writes the run directory, and the others wait for it at
each checkpoint and evaluation.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path

from rlvr.config import RunConfig, to_yaml
from rlvr.core.plugins import load_plugins
from rlvr.logging.jsonl import JsonlWriter
from rlvr.tasks import check_reward_fields, close_rewards
from rlvr.train.build import build
from rlvr.train.checkpoint import latest_checkpoint, load_trainer_state, restore_run_checkpoint, save_run_checkpoint
from rlvr.train.console import checkpoint_line, eval_line, finish, progress_bar, step_line
from rlvr.train.data import PromptStream
from rlvr.train.distributed import Topology
from rlvr.train.held_out import held_out_eval
from rlvr.train.interrupt import GracefulInterrupt
from rlvr.train.precision import resolve_automatic
from rlvr.train.preflight import preflight
from rlvr.train.run_dir import RunDirExists, prepare_run_dir


def train(cfg: RunConfig, *, resume: bool = False, overwrite: bool = False, console=None, progress: bool = True,
          topology: Topology | None = None, checked: bool = False) -> Path:
    """Run `cfg` to its last step; returns the run directory. The modules named in RLVR_PLUGINS are imported
    first (rlvr.core.plugins), then the preflight checks what the run needs of the world (rlvr.train.preflight)
    before any model loads; `checked=True`: the caller has just run them."""
    from rich.console import Console

    load_plugins()
    if not checked:
        preflight(cfg)
    own_topology = topology is None
    topo = topology or Topology.from_env(timeout_s=cfg.train.collective_timeout_s, device=cfg.model.device)
    run_dir = Path(cfg.run_dir or Path("runs") / cfg.name)
    try:
        run = Run(cfg, topo, console=console or Console(soft_wrap=True), progress=progress)
        return run.start(resume=resume, overwrite=overwrite).loop()
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


class Run:
    """One RL run while it loops: its trainer, prompt stream, logs and trackers."""

    def __init__(self, cfg: RunConfig, topo: Topology, *, console, progress: bool):
        from rich.console import Console

        if cfg.task.name.startswith("gym:"):
            raise ValueError(f"{cfg.task.name} is a classic RL environment: run it with rlvr.envs.runner.train_gym_recipe "
                             "(what `rlvr train task.name=gym:...` does)")
        self.topo = topo
        self.main = topo.is_main
        self.console = console if self.main else Console(quiet=True)
        self.progress = progress and self.main
        # config.yaml records the automatic choices as made (build resolves them again, to the same values)
        self.cfg = resolve_automatic(cfg, topo.device(cfg.model.device), distributed=topo.distributed,
                                     log=self.console.print)
        self.run_dir = Path(self.cfg.run_dir or Path("runs") / self.cfg.name)
        self.start_step = 0

    def start(self, *, resume: bool, overwrite: bool) -> Run:
        """Make (or reuse) the run directory, build the trainer, and restore the last checkpoint when resuming."""
        cfg, topo, console = self.cfg, self.topo, self.console
        if self.main:
            self.run_dir = prepare_run_dir(cfg, resume=resume, overwrite=overwrite, console=console)
            console.print(f"run directory: {self.run_dir}")
        elif resume and not (self.run_dir / "config.yaml").exists():
            raise FileNotFoundError(f"cannot resume: {self.run_dir}/config.yaml not found")
        topo.barrier()  # rank 0 has made (or replaced) the run directory
        if self.main and (self.run_dir / "errors").is_dir():
            shutil.rmtree(self.run_dir / "errors")  # reports of an earlier, failed attempt
        topo.barrier()
        ckpt = latest_checkpoint(self.run_dir) if resume else None
        self.t_load = time.perf_counter()
        self.trainer = build(cfg, model_path=str(ckpt / "model") if ckpt else None, log=console.print, topology=topo)
        task = self.trainer.models.task
        train_examples = task.examples("train")
        if train_examples:
            check_reward_fields(task, train_examples[0])
        self.eval_examples = task.examples("test", limit=cfg.eval.size) if cfg.eval.every else []
        self.stream = PromptStream(train_examples, cfg.seed)
        self.metrics_log = JsonlWriter(self.run_dir / "metrics.jsonl")
        self.samples_log = JsonlWriter(self.run_dir / "samples.jsonl")
        if ckpt is not None:
            state = load_trainer_state(ckpt)
            restore_run_checkpoint(self.trainer, self.stream, state, ckpt,
                                   log=lambda message: console.print(message, soft_wrap=True))
            self.start_step = state["step"]
            if self.main:
                self.metrics_log.truncate_after(self.start_step)
                self.samples_log.truncate_after(self.start_step)
            console.print(f"resumed {self.run_dir} from {ckpt.name} (step {self.start_step})")
        self.trackers = _trackers(cfg, self.run_dir, self.main, resumed_at=self.start_step if ckpt is not None else None)
        return self

    def loop(self) -> Path:
        """Every step from the first not yet done to train.steps; an interrupt checkpoints and stops."""
        cfg, topo, console, trainer = self.cfg, self.topo, self.console, self.trainer
        with contextlib.closing(self.trackers), contextlib.closing(trainer.models.engine), _closing_rewards(trainer.models.task), \
                contextlib.closing(trainer):
            ranks = f" on {topo.world_size} ranks ({topo.backend})" if topo.distributed else ""
            console.print(f"loaded in {time.perf_counter() - self.t_load:.1f}s{ranks}")
            if self.start_step == 0 and cfg.eval.every:
                self.evaluate(0)
            # A live bar on a terminal; otherwise (redirected to a file, --no-progress) one line per step.
            self.show_bar = self.progress and console.is_terminal
            self.bar = progress_bar(console, enabled=self.show_bar)
            with self.bar, GracefulInterrupt() as interrupt:
                self.task_id = self.bar.add_task("step", total=cfg.train.steps, completed=self.start_step, reward="-",
                                                 acc="-", step_s="-")
                for step in range(self.start_step + 1, cfg.train.steps + 1):
                    self.one_step(step)
                    # Every rank stops at the same step when any of them was asked to (Ctrl-C, SIGTERM).
                    if topo.all_reduce_max(1.0 if interrupt.requested else 0.0) > 0:
                        return self.stop(step, interrupt)
                    if cfg.checkpoint.every and step % cfg.checkpoint.every == 0 and step != cfg.train.steps:
                        self.checkpoint(step)
            self.checkpoint(cfg.train.steps)
            if self.main:
                self.trackers.log_images(finish(self.run_dir, console, self.metrics_log), cfg.train.steps)
            return self.run_dir

    def one_step(self, step: int) -> None:
        """Train step `step`, log it, and evaluate when it is due."""
        cfg = self.cfg
        metrics = self.trainer.step(self.stream, step)
        row = {"step": step, **metrics}
        if self.main:
            self.metrics_log.write(row)
            self.trackers.log_metrics(row, step)
            _log_samples(self.samples_log, self.trainer.last_rollouts, step, cfg.log_samples)
        self.bar.update(self.task_id, advance=1, reward=f"{metrics['reward_mean']:.3f}", acc=f"{metrics['accuracy']:.2f}",
                        step_s=f"{metrics['step_time_s']:.1f}")
        if not self.show_bar and self.main:
            self.console.print(step_line(step, cfg.train.steps, metrics), soft_wrap=True)
        if cfg.eval.every and (step % cfg.eval.every == 0 or step == cfg.train.steps):
            self.evaluate(step)

    def stop(self, step: int, interrupt: GracefulInterrupt) -> Path:
        self.console.print(f"{interrupt.reason or 'interrupted'}: checkpoint at step {step}; "
                           f"continue with: rlvr train --resume {self.run_dir}")
        self.checkpoint(step)
        if interrupt.reason == "SIGTERM":
            return self.run_dir
        raise KeyboardInterrupt

    def checkpoint(self, step: int) -> None:
        path = save_run_checkpoint(self.trainer, self.stream, self.run_dir, step)
        if path is not None:
            self.console.print(checkpoint_line(path), soft_wrap=True)

    def evaluate(self, step: int) -> None:
        """Held-out evaluation on rank 0, on the gathered parameters; the other ranks wait."""
        if not self.eval_examples:
            return
        bar = getattr(self, "bar", None)
        if bar is not None:
            bar.update(self.task_id, description=f"evaluating {len(self.eval_examples)} problems")
        with self.topo.full_params(self.trainer.sharded):
            if self.main:
                row = {"step": step, **held_out_eval(self.trainer, self.eval_examples, step)}
                self.metrics_log.write(row)
                self.trackers.log_metrics(row, step)
                self.console.print(eval_line(row), soft_wrap=True)
            self.topo.barrier()
        if bar is not None:
            bar.update(self.task_id, description="step")


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


def _log_samples(writer: JsonlWriter, batch, step: int, limit: int) -> None:
    """The first `limit` samples of the step (every one generated, kept or not) in samples.jsonl."""
    if batch is None or limit == 0:
        return
    for i in range(min(limit, len(batch.texts))):
        example = batch.examples[batch.prompt_index[i]]
        writer.write({
            "step": step, "prompt_id": getattr(example, "id", None), "prompt": getattr(example, "question", None),
            "answer": str(getattr(example, "answer", "")), "response": batch.texts[i],
            "reward": float(batch.rewards[i]), "correct": bool(batch.correct[i]), "finish_reason": batch.finish_reasons[i],
        })
