"""`rlvr eval MODEL_OR_RUN_DIR [--task gsm8k] [--data PATH] [--n 8 --k 1,4,8] ...`.

MODEL_OR_RUN_DIR is a model (embedded name, hub id or Hugging Face directory) or the directory of an
`rlvr train` run; for a run, the latest checkpoint's model is evaluated and the run's task, task
arguments and prompt template are the defaults. Writes `eval.json` (metrics, settings, timing) and
`eval_samples.jsonl` (one line per response) to --out, and prints a table of the metrics.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any


class EvalCommandError(Exception):
    """A problem with the command's input, reported as one line without a traceback."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL_OR_RUN_DIR",
                        help="model name, hub id or HF directory; or an `rlvr train` run directory (its latest checkpoint)")
    parser.add_argument("--task", default=None, help="task name (default: the run's task, else gsm8k)")
    parser.add_argument("--data", default=None, metavar="PATH",
                        help="task data: a JSONL file, or a directory holding train.jsonl and test.jsonl")
    parser.add_argument("--split", default="test", help="which split to evaluate (default: test)")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="evaluate only the first N problems")
    parser.add_argument("--n", type=int, default=1, help="samples per problem (default: 1)")
    parser.add_argument("--k", default=None, metavar="K[,K...]",
                        help="pass@k values, comma-separated, each <= n (default: 1 and n)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: 1.0)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold (default: 1.0)")
    parser.add_argument("--greedy", action="store_true", help="greedy decoding (temperature 0); needs --n 1")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="response length limit (default: 256)")
    parser.add_argument("--template", default=None, choices=["chat", "r1_zero", "plain"],
                        help="prompt template, also used by the task to grade (default: the run's template, else the task's own)")
    parser.add_argument("--stop", action="append", default=None, metavar="TEXT",
                        help="stop generating at this string (repeatable), e.g. --stop '</answer>'")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    parser.add_argument("--batch-size", type=int, default=64, help="sequences per generation call (default: 64)")
    parser.add_argument("--no-entropy", action="store_true", help="skip the per-token entropy pass")
    parser.add_argument("--engine", default="hf", help="rollout engine (default: hf)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--dtype", default="float32", help="model dtype (default: float32)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output directory (default: the run directory, else ./eval_<task>_<time>)")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    try:
        return _run(args, console)
    except EvalCommandError as err:
        print(f"rlvr eval: error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, console) -> int:
    import torch

    from rlvr.eval import evaluate

    temperature = 0.0 if args.greedy else args.temperature
    ks = _parse_k(args.k, args.n)
    _check_numbers(args, temperature, ks)

    model_path, run_dir, run_task = resolve_model_or_run(args.model)
    task_name = args.task or run_task.get("name") or "gsm8k"
    own_task = task_name == run_task.get("name")
    # The run's task arguments and template apply only when evaluating the run's own task.
    task_kwargs = dict(run_task.get("kwargs") or {}) if own_task else {}
    template = args.template or (run_task.get("template") if own_task else None)
    if template is not None and (args.template or "template" not in task_kwargs):
        # The task grades with its template (r1_zero answers are read from <answer> tags), so the
        # prompt template is a task option, not only a rendering choice.
        task_kwargs["template"] = template
    task = _make_task(task_name, task_kwargs, args.data)
    try:
        examples = task.examples(args.split, limit=args.limit)
    except (ValueError, KeyError, ImportError, OSError) as err:
        hint = "" if args.data or "path" in task_kwargs else " (for a dataset task, pass --data PATH)"
        raise EvalCommandError(f"cannot read split {args.split!r} of task {task_name!r}: {_message(err)}{hint}") from None
    if not examples:
        raise EvalCommandError(f"task {task_name!r} split {args.split!r} has no problems (check --data and --limit)")

    dtype = getattr(torch, args.dtype, None)
    if not isinstance(dtype, torch.dtype):
        raise EvalCommandError(f"unknown --dtype {args.dtype!r}; use float32, bfloat16 or float16")
    from rlvr.models.embedded import ModelLoadError
    from rlvr.models.loading import load_model
    from rlvr.rollout import get_engine

    try:
        model, tokenizer = load_model(str(model_path), dtype=dtype, device=args.device)
    except (ModelLoadError, RuntimeError, ValueError, KeyError, OSError) as err:
        raise EvalCommandError(f"cannot load model {str(model_path)!r}: {_message(err)}") from None
    try:
        engine = get_engine(args.engine, model, tokenizer)
    except (ValueError, KeyError, ImportError) as err:
        raise EvalCommandError(_message(err)) from None

    console.print(f"evaluating {model_path} on {task_name}/{args.split}: {len(examples)} problems x {args.n} samples")
    try:
        result = evaluate(
            model, tokenizer, task, examples, n=args.n, k=ks, temperature=temperature, top_p=args.top_p,
            max_new_tokens=args.max_new_tokens, template=getattr(task, "template", None), seed=args.seed,
            engine=engine, batch_size=args.batch_size, with_entropy=not args.no_entropy, stop=args.stop,
        )
    except ValueError as err:  # bad input found late, e.g. a prompt longer than the model's context
        raise EvalCommandError(str(err)) from None
    result.settings.update(
        model=str(model_path), run_dir=str(run_dir) if run_dir else None, data=args.data, split=args.split,
        limit=args.limit, engine=args.engine, device=args.device, dtype=args.dtype, task_kwargs=_jsonable(task_kwargs),
        cli_args={k: _jsonable(v) for k, v in vars(args).items() if not k.startswith("_")},
    )
    out = Path(args.out) if args.out else (run_dir or Path(f"eval_{task_name}_{time.strftime('%Y%m%d-%H%M%S')}"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(result.to_json() + "\n")
    (out / "eval_samples.jsonl").write_text(result.samples_jsonl())
    result.print_table(console)
    console.print(f"wrote {out / 'eval.json'} and {out / 'eval_samples.jsonl'}")
    return 0


def resolve_model_or_run(model: str) -> tuple[Path | str, Path | None, dict[str, Any]]:
    """(model to load, run directory or None, the run's `task` config section or {}).

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
    return model_dir, path, _run_task_section(path / "config.yaml")


def _run_task_section(config_path: Path) -> dict[str, Any]:
    import yaml

    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except yaml.YAMLError as err:
        raise EvalCommandError(f"cannot parse {config_path}: {err}") from None
    task = config.get("task") if isinstance(config, dict) else None
    return task if isinstance(task, dict) else {}


def _make_task(name: str, kwargs: dict[str, Any], data: str | None):
    from rlvr.tasks import TASKS, get_task, task_options

    if name not in TASKS:
        raise EvalCommandError(_unknown_task(name, TASKS))
    if data is not None:
        if "path" not in task_options(TASKS[name]):
            raise EvalCommandError(f"task {name!r} takes no --data (it makes its own problems); drop --data")
        if not Path(data).exists():
            raise EvalCommandError(f"--data {data}: no such file or directory")
        kwargs = {**kwargs, "path": data}
    try:
        return get_task(name, **kwargs)
    except (ValueError, TypeError, KeyError, OSError) as err:
        raise EvalCommandError(f"cannot build task {name!r}: {_message(err)}") from None


def _unknown_task(name: str, tasks) -> str:
    from rlvr.core.registry import unknown_name_message

    return unknown_name_message("task", name, tasks)


def _parse_k(text: str | None, n: int) -> list[int]:
    if text is None:
        return sorted({1, max(n, 1)})
    try:
        ks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise EvalCommandError(f"--k {text!r}: expected comma-separated integers such as 1,4,8") from None
    if not ks:
        raise EvalCommandError("--k is empty; give pass@k values such as 1,4,8")
    return ks


def _check_numbers(args: argparse.Namespace, temperature: float, ks: list[int]) -> None:
    if args.n < 1:
        raise EvalCommandError(f"--n must be >= 1; got {args.n}")
    bad = [k for k in ks if not 1 <= k <= args.n]
    if bad:
        raise EvalCommandError(f"--k {','.join(map(str, bad))}: pass@k needs 1 <= k <= n (n={args.n}); raise --n or drop those k")
    if temperature == 0 and args.n > 1:
        what = "--greedy" if args.greedy else "--temperature 0"
        raise EvalCommandError(f"{what} gives identical samples; use --n 1, or sample with a temperature > 0")
    if temperature < 0:
        raise EvalCommandError(f"--temperature must be >= 0; got {temperature}")
    if not 0 < args.top_p <= 1:
        raise EvalCommandError(f"--top-p must be in (0, 1]; got {args.top_p}")
    if args.limit is not None and args.limit < 1:
        raise EvalCommandError(f"--limit must be >= 1; got {args.limit}")
    if args.max_new_tokens < 1:
        raise EvalCommandError(f"--max-new-tokens must be >= 1; got {args.max_new_tokens}")
    if args.batch_size < 1:
        raise EvalCommandError(f"--batch-size must be >= 1; got {args.batch_size}")


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
