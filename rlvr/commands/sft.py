"""`rlvr sft --model M --data train.jsonl [--eval-data test.jsonl] [--task NAME] --out RUN_DIR`.

Supervised fine-tuning on (prompt, response) JSONL rows (rlvr.train.sft). The prompt field holds the
user message (a string) or a list of chat messages ({"role", "content"}); it is rendered with
--template (default: the model's chat template). The response is what the model is trained to write.

RUN_DIR gets metrics.jsonl (one row per optimizer step; held-out rows before training and after each
epoch: eval_loss per response token with --eval-data, eval_accuracy_greedy with --task), config.yaml,
the final model in Hugging Face format in RUN_DIR/model, and the checkpoints/ layout that
`rlvr eval RUN_DIR` loads (with the task and template of this run as its defaults).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

TEMPLATES = ("chat", "plain", "r1_zero")


class CommandError(Exception):
    """Bad input, reported as one line without a traceback."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m-instruct",
                        help="model name, hub id or HF directory (default: smollm2-135m-instruct)")
    parser.add_argument("--data", required=True, metavar="JSONL", help="training rows, one JSON object per line")
    parser.add_argument("--eval-data", default=None, metavar="JSONL", help="held-out rows for the eval loss")
    parser.add_argument("--prompt-field", default="prompt", help="field holding the prompt (default: prompt)")
    parser.add_argument("--response-field", default="response", help="field holding the response (default: response)")
    add_task_arguments(parser, required=False)
    parser.add_argument("--system-prompt", default=None, help="system message for string prompts (default: the task's, if any)")
    add_sft_arguments(parser)
    parser.add_argument("--eval-size", type=int, default=200, help="held-out task problems for the accuracy (default: 200)")
    parser.add_argument("--max-new-tokens", type=int, default=64,
                        help="response limit when measuring task accuracy (default: 64)")
    add_run_arguments(parser)


# --- argument groups shared with `rlvr expert-iter` -------------------------------------------------------


def add_task_arguments(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument("--task", required=required, default=None, help="task name (rlvr.tasks), e.g. arithmetic")
    parser.add_argument("--task-kwargs", nargs="*", default=[], metavar="KEY=VALUE",
                        help="task options, values read as YAML scalars, e.g. digits=2 operators=+-")
    parser.add_argument("--template", default=None, choices=TEMPLATES, help="prompt template (default: chat)")


def add_sft_arguments(parser: argparse.ArgumentParser, *, lr: float = 1e-5) -> None:
    parser.add_argument("--epochs", type=int, default=1, help="passes over the data (default: 1)")
    parser.add_argument("--lr", type=float, default=lr, help=f"AdamW learning rate (default: {lr:g})")
    parser.add_argument("--batch-size", type=int, default=8, help="records per optimizer step (default: 8)")
    parser.add_argument("--micro-batch-size", type=int, default=4,
                        help="records per forward pass; gradients accumulate, the result does not change (default: 4)")
    parser.add_argument("--aggregation", default="token_mean",
                        help="loss aggregation: token_mean, seq_mean_token_mean, seq_mean_token_sum, seq_mean_token_sum_norm")
    parser.add_argument("--max-len", type=int, default=512, help="longest prompt + response in tokens (default: 512)")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default: 0)")
    parser.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping norm; 0 turns it off (default: 1)")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to create")
    parser.add_argument("--overwrite", action="store_true", help="replace RUN_DIR if it exists")
    parser.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--dtype", default="float32", help="model dtype (default: float32)")
    parser.add_argument("--no-progress", action="store_true", help="no live progress bar")


def sft_config(args: argparse.Namespace):
    from rlvr.train.sft import SFTConfig

    config = SFTConfig(
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, micro_batch_size=args.micro_batch_size,
        aggregation=args.aggregation, max_len=args.max_len, weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm or None, seed=args.seed,
    )
    try:
        config.check()
    except ValueError as err:
        raise CommandError(str(err)) from None
    return config


def parse_task_kwargs(items: list[str]) -> dict[str, Any]:
    """['digits=2', 'operators=+-'] -> {'digits': 2, 'operators': '+-'} (YAML scalars, else the raw text)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise CommandError(f"--task-kwargs {item!r} is not KEY=VALUE (e.g. digits=2)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw  # e.g. operators=* (YAML reads * as an alias)
        out[key.strip()] = value if isinstance(value, (str, int, float, bool)) or value is None else raw
    return out


def build_task(name: str, kwargs: dict[str, Any], template: str):
    from rlvr.core.registry import unknown_name_message
    from rlvr.tasks import TASKS, get_task

    if name not in TASKS:
        raise CommandError(unknown_name_message("task", name, TASKS))
    if "template" in kwargs:
        raise CommandError("set the prompt template with --template, not --task-kwargs template=...")
    try:
        return get_task(name, **kwargs, template=template)
    except (ValueError, TypeError, KeyError, OSError) as err:
        raise CommandError(f"cannot build task {name!r}: {_message(err)}") from None


def prepare_run_dir(out: str, overwrite: bool) -> Path:
    run_dir = Path(out)
    if run_dir.exists() and not run_dir.is_dir():
        raise CommandError(f"--out {run_dir} is a file; give a directory")
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise CommandError(f"run directory {run_dir} already exists; pass --overwrite to replace it, or choose another --out")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def write_run_config(run_dir: Path, config: dict[str, Any]) -> None:
    import yaml

    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def load_model_or_fail(args: argparse.Namespace):
    import torch

    from rlvr.models import ModelLoadError, load_model

    dtype = getattr(torch, args.dtype, None)
    if not isinstance(dtype, torch.dtype):
        raise CommandError(f"unknown --dtype {args.dtype!r}; use float32, bfloat16 or float16")
    try:
        return load_model(args.model, dtype=dtype, device=args.device)
    except (ModelLoadError, RuntimeError, ValueError, KeyError, OSError) as err:
        raise CommandError(f"cannot load model {args.model!r}: {_message(err)}") from None


def _message(err: BaseException) -> str:
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


# --- data -----------------------------------------------------------------------------------------------


def read_records(path: str, prompt_field: str, response_field: str, tokenizer, template: str, system_prompt: str | None):
    """SFTRecords of a JSONL file, prompts rendered with `template`; errors name the file and line."""
    from rlvr.tasks.dataset import field_of, read_jsonl
    from rlvr.tasks.templates import render_prompt
    from rlvr.train.sft import SFTRecord

    if not Path(path).is_file():
        raise CommandError(f"{path}: no such file")
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
        raise CommandError(_message(err)) from None
    if not records:
        raise CommandError(f"{path} has no rows")
    return records


def _messages(prompt: Any, field: str, where: str, system_prompt: str | None) -> list[dict[str, str]]:
    if isinstance(prompt, str):
        return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and prompt and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in prompt):
        return [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]
    raise ValueError(f"{where}: field {field!r} must be a string or a list of {{'role', 'content'}} messages; "
                     f"got {type(prompt).__name__}")


# --- run ------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    try:
        run_dir = _run(args, console)
    except CommandError as err:
        print(f"rlvr sft: error: {err}", file=sys.stderr)
        return 2
    except FloatingPointError as err:
        print(f"rlvr sft: stopped: {err}", file=sys.stderr)
        return 1
    console.print(f"done: {run_dir}")
    return 0


def _run(args: argparse.Namespace, console) -> Path:
    import torch

    from rlvr.logging.jsonl import JsonlWriter
    from rlvr.train.sft import evaluate_loss, save_final_model, sft, task_accuracy

    config = sft_config(args)
    if args.eval_size < 1 or args.max_new_tokens < 1:
        raise CommandError("--eval-size and --max-new-tokens must be >= 1")
    template = args.template or "chat"
    task = build_task(args.task, parse_task_kwargs(args.task_kwargs), template) if args.task else None
    if task is None and args.task_kwargs:
        raise CommandError("--task-kwargs needs --task")
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    model, tokenizer = load_model_or_fail(args)
    system_prompt = args.system_prompt if args.system_prompt is not None else getattr(task, "system_prompt", None)
    try:
        records = read_records(args.data, args.prompt_field, args.response_field, tokenizer, template, system_prompt)
        eval_records = (read_records(args.eval_data, args.prompt_field, args.response_field, tokenizer, template, system_prompt)
                        if args.eval_data else [])
        eval_examples = task.examples("test", limit=args.eval_size) if task is not None else []
    except ValueError as err:  # e.g. a chat template missing from a base model's tokenizer
        raise CommandError(str(err)) from None
    run_dir = prepare_run_dir(args.out, args.overwrite)
    write_run_config(run_dir, {
        "command": "sft", "model": args.model, "data": args.data, "eval_data": args.eval_data,
        "task": {"name": args.task, "kwargs": parse_task_kwargs(args.task_kwargs), "template": template} if task else None,
        "template": template, "sft": vars(config),
    })
    console.print(f"loaded in {time.perf_counter() - t0:.1f}s; {len(records)} training rows; run directory: {run_dir}")
    metrics = JsonlWriter(run_dir / "metrics.jsonl")

    def held_out(epoch: int, step: int) -> None:
        row: dict[str, Any] = {"step": step, "epoch": epoch}
        if eval_records:
            row["eval_loss"] = evaluate_loss(model, tokenizer, eval_records, max_len=config.max_len)["loss"]
        if eval_examples:
            row["eval_accuracy_greedy"] = task_accuracy(model, tokenizer, task, eval_examples, temperature=0.0,
                                                        max_new_tokens=args.max_new_tokens, seed=args.seed)["accuracy"]
        if len(row) > 2:
            metrics.write(row)
            shown = ", ".join(f"{k}={v:.4f}" for k, v in row.items() if k.startswith("eval"))
            console.print(f"held-out after epoch {epoch}: {shown}")

    held_out(0, 0)
    result = sft(model, tokenizer, records, config=config, on_step=metrics.write, on_epoch_end=held_out,
                 console=console, progress=not args.no_progress)
    t = result.tokenize
    if t.truncated or t.dropped:
        console.print(f"[yellow]{t.truncated} rows cut to --max-len {config.max_len} (they lose their eos); "
                      f"{t.dropped} rows dropped (prompt alone fills --max-len)")
    save_final_model(run_dir, model, tokenizer, result.steps)
    console.print(f"{result.steps} steps, mean training loss {result.loss_mean:.4f}; model: {run_dir / 'model'}")
    return run_dir
