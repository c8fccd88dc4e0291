"""An evaluation from its config (`rlvr eval`; rlvr.config.commands.EvalRunConfig): a model, or the latest
checkpoint of an `rlvr train` run directory with the run's task, task options and template as defaults,
evaluated by rlvr.eval.evaluate; `eval.json` (metrics, settings, timing) and `eval_samples.jsonl` (one line
per response) are written to the output directory and the metrics printed as a table.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rlvr.config.commands import EvalRunConfig


class InputError(ValueError):
    """Bad input (a model, a run directory, a task, its data), reported by rlvr.cli as one line without a
    traceback."""


def load_model_or_fail(model_cfg):
    """(model, tokenizer) of a `model` section (on cuda when available and model.device is auto)."""
    import torch

    from rlvr.models import ModelLoadError, load_model

    device = ("cuda" if torch.cuda.is_available() else "cpu") if model_cfg.device == "auto" else model_cfg.device
    try:
        return load_model(model_cfg.name, dtype=getattr(torch, model_cfg.dtype), device=str(torch.device(device)),
                          trust_remote_code=model_cfg.trust_remote_code, cache_dir=model_cfg.cache_dir)
    except (ModelLoadError, RuntimeError, ValueError, KeyError, OSError) as err:
        raise InputError(f"cannot load model {model_cfg.name!r}: {_message(err)}") from None


def evaluate_config(cfg: EvalRunConfig, console=None) -> Path:
    """Evaluate as `cfg` says (module docstring); returns the output directory."""
    from rich.console import Console

    console = console if console is not None else Console(soft_wrap=True)
    from rlvr.eval import evaluate

    temperature = 0.0 if cfg.greedy else cfg.temperature
    ks = cfg.k if cfg.k is not None else sorted({1, cfg.n})
    model_path, run_dir, run_config = resolve_model_or_run(cfg.model.name)
    task_cfg = _task_config(cfg.task, _section(run_config, "task"))
    task = _make_task(task_cfg, cfg.data)
    # the length limit: the one given, else the run's own (its task, evaluated as it trained), else the task's
    run_budget = _section(run_config, "rollout").get("max_new_tokens")
    if task_cfg.name != _section(run_config, "task").get("name"):
        run_budget = None
    max_new_tokens = cfg.max_new_tokens or run_budget or task.max_new_tokens
    task_name = task_cfg.name
    try:
        examples = task.examples(cfg.split, limit=cfg.limit)
    except (ValueError, KeyError, ImportError, OSError) as err:
        hint = "" if cfg.data or "path" in task_cfg.kwargs else " (for a dataset task, pass --data PATH)"
        raise InputError(f"cannot read split {cfg.split!r} of task {task_name!r}: {_message(err)}{hint}") from None
    if not examples:
        raise InputError(f"task {task_name!r} split {cfg.split!r} has no problems (check --data and --limit)")

    from rlvr.rollout import get_engine

    model, tokenizer = load_model_or_fail(cfg.model.model_copy(update={"name": str(model_path)}))
    device = str(next(model.parameters()).device)
    try:
        engine = get_engine(cfg.engine, model, tokenizer)
    except (ValueError, KeyError, ImportError) as err:
        raise InputError(_message(err)) from None

    console.print(f"evaluating {model_path} on {task_name}/{cfg.split}: {len(examples)} problems x {cfg.n} samples")
    try:
        result = evaluate(
            model, tokenizer, task, examples, n=cfg.n, k=ks, temperature=temperature, top_p=cfg.top_p,
            max_new_tokens=int(max_new_tokens), template=getattr(task, "template", None), seed=cfg.seed,
            engine=engine, batch_size=cfg.batch_size, with_entropy=cfg.entropy, stop=cfg.stop or None,
        )
    except ValueError as err:  # bad input found late, e.g. a prompt longer than the model's context
        raise InputError(str(err)) from None
    result.settings.update(
        model=str(model_path), run_dir=str(run_dir) if run_dir else None, data=cfg.data, split=cfg.split,
        limit=cfg.limit, engine=cfg.engine, device=device, dtype=cfg.model.dtype,
        task_kwargs=_jsonable(dict(task_cfg.kwargs)), config=cfg.model_dump(mode="json"),
    )
    out = Path(cfg.out) if cfg.out else (run_dir or Path(f"eval_{task_name}_{time.strftime('%Y%m%d-%H%M%S')}"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(result.to_json() + "\n")
    (out / "eval_samples.jsonl").write_text(result.samples_jsonl())
    result.print_table(console)
    console.print(f"wrote {out / 'eval.json'} and {out / 'eval_samples.jsonl'}")
    return out


def _task_config(task_cfg, run_task: dict[str, Any]):
    """The task to evaluate: the one asked for, else the run's; the run's options and template apply only
    when it is the run's own task (the task grades with its template: r1_zero reads <answer> tags)."""
    from rlvr.config import ConfigError, TaskConfig

    run_section = {k: v for k, v in run_task.items() if k in TaskConfig.model_fields}
    try:
        if task_cfg is None:
            return TaskConfig(**{"name": "gsm8k", **run_section}) if run_section else TaskConfig(name="gsm8k")
        if task_cfg.name != run_section.get("name"):
            return task_cfg
        merged = {**run_section, **task_cfg.model_dump(exclude_unset=True)}
        merged["kwargs"] = {**(run_section.get("kwargs") or {}), **task_cfg.kwargs}
        return TaskConfig(**merged)
    except ValueError as err:
        raise ConfigError(f"the run's task section cannot be used: {err}") from None


def resolve_model_or_run(model: str) -> tuple[Path | str, Path | None, dict[str, Any]]:
    """(model to load, run directory or None, the run's config (its config.yaml) or {}).

    A directory holding `config.yaml` is a run directory: its model is
    `checkpoints/<name in checkpoints/latest>/model`. Anything else is passed to load_model as is.
    """
    path = Path(model)
    if not (path.is_dir() and (path / "config.yaml").is_file()):
        return model, None, {}
    pointer = path / "checkpoints" / "latest"
    if not pointer.is_file():
        raise InputError(
            f"{path} is a run directory (it has config.yaml) but {pointer} does not exist: "
            "the run has not saved a checkpoint yet; evaluate a model directory instead"
        )
    name = pointer.read_text().strip()
    if not name:
        raise InputError(f"{pointer} is empty; it should name the latest checkpoint directory (e.g. step_000100)")
    model_dir = path / "checkpoints" / name / "model"
    if not model_dir.is_dir():
        raise InputError(f"{pointer} names {name!r}, but {model_dir} does not exist; restore that checkpoint, "
                               "or pass a checkpoint's model/ directory directly")
    return model_dir, path, _run_config(path / "config.yaml")


def _run_config(config_path: Path) -> dict[str, Any]:
    import yaml

    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except yaml.YAMLError as err:
        raise InputError(f"cannot parse {config_path}: {err}") from None
    return config if isinstance(config, dict) else {}


def _section(config: dict[str, Any], key: str) -> dict[str, Any]:
    value = config.get(key)
    return value if isinstance(value, dict) else {}


def _make_task(task_cfg, data: str | None):
    from rlvr.tasks import TASKS, build_task, task_options

    if task_cfg.name not in TASKS:
        raise InputError(_unknown_task(task_cfg.name, TASKS))
    if data is not None:
        if "path" not in task_options(TASKS[task_cfg.name]):
            raise InputError(f"task {task_cfg.name!r} takes no --data (it makes its own problems); drop --data")
        if not Path(data).exists():
            raise InputError(f"--data {data}: no such file or directory")
        task_cfg = task_cfg.model_copy(update={"kwargs": {**task_cfg.kwargs, "path": data}})
    try:
        return build_task(task_cfg)
    except (ValueError, TypeError, KeyError, OSError) as err:
        raise InputError(f"cannot build task {task_cfg.name!r}: {_message(err)}") from None


def _unknown_task(name: str, tasks) -> str:
    from rlvr.core.registry import unknown_name_message

    return unknown_name_message("task", name, tasks)


def _message(err: BaseException) -> str:
    # KeyError's str() wraps the message in quotes.
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


def _jsonable(value: Any) -> Any:
    import json

    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)
