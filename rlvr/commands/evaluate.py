"""`rlvr eval MODEL_OR_RUN_DIR [--task gsm8k] [--data PATH] [--n 8 --k 1,4,8] ...`.

MODEL_OR_RUN_DIR is a model (embedded name, hub id or Hugging Face directory) or the directory of an
`rlvr train` run; for a run, the latest checkpoint's model is evaluated and the run's task, task
arguments and prompt template are the defaults. Writes `eval.json` (metrics, settings, timing) and
`eval_samples.jsonl` (one line per response) to --out, and prints a table of the metrics.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from rlvr.commands._config import add_config_arguments, command_config, print_config


class EvalCommandError(ValueError):
    """A problem with the command's input, reported by rlvr.cli as one line without a traceback."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL_OR_RUN_DIR",
                        help="model name, hub id or HF directory; or an `rlvr train` run directory (its latest checkpoint)")
    add_config_arguments(parser)
    parser.add_argument("--task", help="task name (task.name; default: the run's task, else gsm8k)")
    parser.add_argument("--data", metavar="PATH",
                        help="task data: a JSONL file, or a directory holding train.jsonl and test.jsonl (data)")
    parser.add_argument("--split", help="which split to evaluate (split; default: test)")
    parser.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N problems (limit)")
    parser.add_argument("--n", type=int, help="samples per problem (n; default: 1)")
    parser.add_argument("--k", metavar="K[,K...]", help="pass@k values, comma-separated, each <= n (k; default: 1 and n)")
    parser.add_argument("--temperature", type=float, help="sampling temperature (temperature; default: 1.0)")
    parser.add_argument("--top-p", type=float, help="nucleus sampling threshold (top_p; default: 1.0)")
    parser.add_argument("--greedy", action="store_const", const=True, help="greedy decoding (greedy=true); needs n=1")
    parser.add_argument("--max-new-tokens", type=int, help="response length limit (max_new_tokens; default: the run's, "
                        "else the task's response budget, e.g. gsm8k 256, humaneval 512)")
    parser.add_argument("--template", choices=["chat", "r1_zero", "plain"],
                        help="prompt template, also used by the task to grade (task.template; default: the run's, "
                        "else the task's own)")
    parser.add_argument("--stop", action="append", metavar="TEXT",
                        help="stop generating at this string (stop; repeatable), e.g. --stop '</answer>'")
    parser.add_argument("--seed", type=int, help="sampling seed (seed; default: 0)")
    parser.add_argument("--batch-size", type=int, help="sequences per generation call (batch_size; default: 64)")
    parser.add_argument("--no-entropy", dest="entropy", action="store_const", const=False,
                        help="skip the per-token entropy pass (entropy=false)")
    parser.add_argument("--engine", help="rollout engine (engine; default: hf)")
    parser.add_argument("--device", help="torch device (model.device; default: auto, cuda if available)")
    parser.add_argument("--dtype", help="model dtype (model.dtype; default: float32)")
    parser.add_argument("--out", metavar="DIR",
                        help="output directory (out; default: the run directory, else ./eval_<task>_<time>)")


FLAGS = {"model": "model.name", "task": "task.name", "template": "task.template", "device": "model.device",
         "dtype": "model.dtype", **{name: name for name in ("data", "split", "limit", "n", "temperature", "top_p",
                                                           "greedy", "max_new_tokens", "stop", "seed", "batch_size",
                                                           "entropy", "engine", "out")}}
"""Shorthand flag -> the config key it sets (rlvr.config.commands.EvalRunConfig)."""


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from rlvr.config.commands import EvalRunConfig

    extra = [f"k={json.dumps(_parse_k(args.k))}"] if args.k is not None else []
    from rlvr.train.preflight import preflight

    cfg = command_config(EvalRunConfig, args, FLAGS, extra)
    preflight(cfg)
    if args.print_config:
        print_config(cfg)
        return 0
    return _run(cfg, Console(soft_wrap=True))


def _run(cfg, console) -> int:
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
        raise EvalCommandError(f"cannot read split {cfg.split!r} of task {task_name!r}: {_message(err)}{hint}") from None
    if not examples:
        raise EvalCommandError(f"task {task_name!r} split {cfg.split!r} has no problems (check --data and --limit)")

    from rlvr.rollout import get_engine
    from rlvr.train.supervised_runs import load_model_or_fail

    model, tokenizer = load_model_or_fail(cfg.model.model_copy(update={"name": str(model_path)}))
    device = str(next(model.parameters()).device)
    try:
        engine = get_engine(cfg.engine, model, tokenizer)
    except (ValueError, KeyError, ImportError) as err:
        raise EvalCommandError(_message(err)) from None

    console.print(f"evaluating {model_path} on {task_name}/{cfg.split}: {len(examples)} problems x {cfg.n} samples")
    try:
        result = evaluate(
            model, tokenizer, task, examples, n=cfg.n, k=ks, temperature=temperature, top_p=cfg.top_p,
            max_new_tokens=int(max_new_tokens), template=getattr(task, "template", None), seed=cfg.seed,
            engine=engine, batch_size=cfg.batch_size, with_entropy=cfg.entropy, stop=cfg.stop or None,
        )
    except ValueError as err:  # bad input found late, e.g. a prompt longer than the model's context
        raise EvalCommandError(str(err)) from None
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
    return 0


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
        raise EvalCommandError(
            f"{path} is a run directory (it has config.yaml) but {pointer} does not exist: "
            "the run has not saved a checkpoint yet; evaluate a model directory instead"
        )
    name = pointer.read_text().strip()
    if not name:
        raise EvalCommandError(f"{pointer} is empty; it should name the latest checkpoint directory (e.g. step_000100)")
    model_dir = path / "checkpoints" / name / "model"
    if not model_dir.is_dir():
        raise EvalCommandError(f"{pointer} names {name!r}, but {model_dir} does not exist; restore that checkpoint, "
                               "or pass a checkpoint's model/ directory directly")
    return model_dir, path, _run_config(path / "config.yaml")


def _run_config(config_path: Path) -> dict[str, Any]:
    import yaml

    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except yaml.YAMLError as err:
        raise EvalCommandError(f"cannot parse {config_path}: {err}") from None
    return config if isinstance(config, dict) else {}


def _section(config: dict[str, Any], key: str) -> dict[str, Any]:
    value = config.get(key)
    return value if isinstance(value, dict) else {}


def _make_task(task_cfg, data: str | None):
    from rlvr.tasks import TASKS, build_task, task_options

    if task_cfg.name not in TASKS:
        raise EvalCommandError(_unknown_task(task_cfg.name, TASKS))
    if data is not None:
        if "path" not in task_options(TASKS[task_cfg.name]):
            raise EvalCommandError(f"task {task_cfg.name!r} takes no --data (it makes its own problems); drop --data")
        if not Path(data).exists():
            raise EvalCommandError(f"--data {data}: no such file or directory")
        task_cfg = task_cfg.model_copy(update={"kwargs": {**task_cfg.kwargs, "path": data}})
    try:
        return build_task(task_cfg)
    except (ValueError, TypeError, KeyError, OSError) as err:
        raise EvalCommandError(f"cannot build task {task_cfg.name!r}: {_message(err)}") from None


def _unknown_task(name: str, tasks) -> str:
    from rlvr.core.registry import unknown_name_message

    return unknown_name_message("task", name, tasks)


def _parse_k(text: str) -> list[int]:
    try:
        ks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise EvalCommandError(f"--k {text!r}: expected comma-separated integers such as 1,4,8") from None
    if not ks:
        raise EvalCommandError("--k is empty; give pass@k values such as 1,4,8")
    return ks


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
