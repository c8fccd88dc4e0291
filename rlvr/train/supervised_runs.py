"""Runs of `rlvr sft` and `rlvr expert-iter` from their configs (rlvr.config.commands): the task, the model,
the data and the run directory around the loops of rlvr.train.sft and rlvr.train.expert_iter.

A run directory gets config.yaml, metrics.jsonl (and, for expert iteration, samples.jsonl), the final model
in RUN_DIR/model and the checkpoints/ layout that `rlvr eval RUN_DIR` loads. Bad input (a data file, a
model, a task, an existing run directory) raises InputError, which rlvr.cli reports as one line.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from rlvr.config.commands import ExpertIterRunConfig, SFTRunConfig
from rlvr.eval.from_config import InputError, load_model_or_fail

# --- what both runs need --------------------------------------------------------------------------------


def make_task(task_cfg, template: str | None):
    """The task of a command's `task` section, its template defaulting to `template` (else the task's own)."""
    from rlvr.tasks import build_task

    if task_cfg.template is None and template is not None:
        task_cfg = task_cfg.model_copy(update={"template": template})
    try:
        return build_task(task_cfg)
    except (ValueError, TypeError, KeyError, OSError) as err:
        raise InputError(f"cannot build task {task_cfg.name!r}: {_message(err)}") from None


def prepare_run_dir(out: str, overwrite: bool) -> Path:
    run_dir = Path(out)
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"run_dir {run_dir} is a file; give a directory")
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise InputError(f"run directory {run_dir} already exists; pass --overwrite to replace it, or choose "
                             "another --out / run_dir=...")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def write_config(run_dir: Path, cfg: Any) -> None:
    """RUN_DIR/config.yaml: the run's resolved config (`rlvr eval RUN_DIR` reads its task and template)."""
    import yaml

    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def _console(console):
    from rich.console import Console

    return console if console is not None else Console(soft_wrap=True)


def _message(err: BaseException) -> str:
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


# --- data -----------------------------------------------------------------------------------------------


def read_records(path: str, prompt_field: str, response_field: str, tokenizer, template: str, system_prompt: str | None):
    """SFTRecords of a JSONL file, prompts rendered with `template`; errors name the file and line."""
    from rlvr.tasks.dataset import field_of, read_jsonl
    from rlvr.tasks.templates import render_prompt
    from rlvr.train.sft import SFTRecord

    if not Path(path).is_file():
        raise InputError(f"{path}: no such file")
    try:
        rows = read_jsonl(path)
        records = []
        for row, where in rows:
            prompt, response = field_of(row, prompt_field, where), field_of(row, response_field, where)
            if not isinstance(response, str):
                raise ValueError(f"{where}: field {response_field!r} must be a string, got {type(response).__name__}")
            messages = _messages(prompt, prompt_field, where, system_prompt)
            records.append(SFTRecord(render_prompt(tokenizer, messages, template), response))
    except (ValueError, KeyError) as err:
        raise InputError(_message(err)) from None
    if not records:
        raise InputError(f"{path} has no rows")
    return records


def _messages(prompt: Any, field: str, where: str, system_prompt: str | None) -> list[dict[str, str]]:
    if isinstance(prompt, str):
        return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and prompt and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in prompt):
        return [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]
    raise ValueError(f"{where}: field {field!r} must be a string or a list of {{'role', 'content'}} messages; "
                     f"got {type(prompt).__name__}")


# --- the runs -------------------------------------------------------------------------------------------


def run_sft(cfg: SFTRunConfig, *, overwrite: bool = False, console=None, progress: bool = False) -> Path:
    """Fine-tune `cfg.model` on `cfg.data` (rlvr.train.sft), measuring the held-out loss and the task's greedy
    accuracy before training and after each epoch; returns the run directory."""
    import torch

    from rlvr.logging.jsonl import JsonlWriter
    from rlvr.train.sft import evaluate_loss, save_final_model, sft, task_accuracy

    console = _console(console)
    config = cfg.sft.model_copy(update={"seed": cfg.seed})
    task = make_task(cfg.task, cfg.template) if cfg.task is not None else None
    template = cfg.template or (task.template if task is not None else "chat")
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    model, tokenizer = load_model_or_fail(cfg.model)
    data = cfg.data
    system_prompt = data.system_prompt if data.system_prompt is not None else getattr(task, "system_prompt", None)
    try:
        records = read_records(data.path, data.prompt_field, data.response_field, tokenizer, template, system_prompt)
        eval_records = (read_records(data.eval_path, data.prompt_field, data.response_field, tokenizer, template,
                                     system_prompt) if data.eval_path else [])
        eval_examples = task.examples("test", limit=cfg.eval.size) if task is not None else []
    except ValueError as err:  # e.g. a chat template missing from a base model's tokenizer
        raise InputError(str(err)) from None
    run_dir = prepare_run_dir(cfg.run_dir, overwrite)
    if cfg.task is not None:  # `rlvr eval RUN_DIR` reads the task, with the template the data was rendered with
        cfg = cfg.model_copy(update={"task": cfg.task.model_copy(update={"template": template})})
    write_config(run_dir, cfg)
    console.print(f"run directory: {run_dir}")
    console.print(f"loaded in {time.perf_counter() - t0:.1f}s; {len(records)} training rows")
    metrics = JsonlWriter(run_dir / "metrics.jsonl")

    def held_out(epoch: int, step: int) -> None:
        row: dict[str, Any] = {"step": step, "epoch": epoch}
        if eval_records:
            row["eval_loss"] = evaluate_loss(model, tokenizer, eval_records, max_len=config.max_len)["loss"]
        if eval_examples:
            row["eval_accuracy_greedy"] = task_accuracy(model, tokenizer, task, eval_examples, temperature=0.0,
                                                        max_new_tokens=cfg.eval.max_new_tokens, seed=cfg.seed)["accuracy"]
        if len(row) > 2:
            metrics.write(row)
            shown = ", ".join(f"{k}={v:.4f}" for k, v in row.items() if k.startswith("eval"))
            console.print(f"held-out after epoch {epoch}: {shown}")

    held_out(0, 0)
    result = sft(model, tokenizer, records, config=config, on_step=metrics.write, on_epoch_end=held_out,
                 console=console, progress=progress)
    t = result.tokenize
    if t.truncated or t.dropped:
        console.print(f"[yellow]{t.truncated} rows cut to max_len {config.max_len} (they lose their eos); "
                      f"{t.dropped} rows dropped (prompt alone fills max_len)")
    save_final_model(run_dir, model, tokenizer, result.steps)
    console.print(f"{result.steps} steps, mean training loss {result.loss_mean:.4f}; model: {run_dir / 'model'}")
    return run_dir


def run_expert_iteration(cfg: ExpertIterRunConfig, *, overwrite: bool = False, console=None) -> Path:
    """Expert iteration (rlvr.train.expert_iter) of `cfg.model` on `cfg.task`, one metrics row per round and a
    table of them at the end; returns the run directory."""
    import torch

    from rlvr.logging.jsonl import JsonlWriter
    from rlvr.rollout import get_engine
    from rlvr.train.expert_iter import expert_iteration
    from rlvr.train.sft import save_final_model

    console = _console(console)
    config = cfg.expert_iter.model_copy(update={"seed": cfg.seed, "sft": cfg.expert_iter.sft.model_copy(update={"seed": cfg.seed})})
    task = make_task(cfg.task, "chat")
    try:
        train_size, test_size = len(task.examples("train")), len(task.examples("test", limit=config.eval_size))
    except (ValueError, KeyError, ImportError, OSError) as err:
        raise InputError(f"cannot read the problems of task {cfg.task.name!r}: {err}") from None
    if not train_size or not test_size:
        raise InputError(f"task {cfg.task.name!r} has {train_size} training and {test_size} held-out problems; "
                           "it needs both")
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    model, tokenizer = load_model_or_fail(cfg.model)
    try:
        engine = get_engine(cfg.engine, model, tokenizer)
        task.prompt(task.examples("train", limit=1)[0], tokenizer)  # a template the tokenizer lacks fails here
    except (ValueError, KeyError, ImportError) as err:
        raise InputError(str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)) from None
    run_dir = prepare_run_dir(cfg.run_dir, overwrite)
    write_config(run_dir, cfg.model_copy(update={"task": cfg.task.model_copy(update={"template": task.template})}))
    console.print(f"run directory: {run_dir}")
    console.print(f"loaded in {time.perf_counter() - t0:.1f}s; {train_size} training problems, {test_size} held-out")
    metrics, samples = JsonlWriter(run_dir / "metrics.jsonl"), JsonlWriter(run_dir / "samples.jsonl")

    def log_samples(rnd: int, rows: list[dict]) -> None:
        for row in rows:
            samples.write({"round": rnd, **row})

    rows = expert_iteration(model, tokenizer, task, config=config, engine=engine, on_round=metrics.write,
                            on_samples=log_samples, log=console.print)
    save_final_model(run_dir, model, tokenizer, step=config.rounds)
    _summary(console, rows)
    return run_dir


def _summary(console, rows: list[dict]) -> None:
    from rich.table import Table

    columns = ("round", "kept", "sft_loss", "eval_accuracy_greedy", "eval_accuracy", "round_time_s")
    table = Table(title="expert iteration")
    for col in columns:
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*(_fmt(row.get(col)) for col in columns))
    console.print(table)


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)
