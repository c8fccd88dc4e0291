"""`rlvr sft [RECIPE.yaml] [key=value ...]`, or with its shorthand flags `--model M --data train.jsonl
[--eval-data test.jsonl] [--task NAME] --out RUN_DIR`: the config is rlvr.config.commands.SFTRunConfig
(`--print-config` shows it), in the same idiom as `rlvr train`.

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
import json
import shutil
import time
from pathlib import Path
from typing import Any

from rlvr.commands._config import add_config_arguments, command_config, print_config, write_config

TEMPLATES = ("chat", "plain", "r1_zero")


class CommandError(ValueError):
    """Bad input, reported by rlvr.cli as one line without a traceback."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--model", help="model name, hub id or HF directory (model.name; default: smollm2-135m-instruct)")
    parser.add_argument("--data", metavar="JSONL", help="training rows, one JSON object per line (data.path)")
    parser.add_argument("--eval-data", metavar="JSONL", help="held-out rows for the eval loss (data.eval_path)")
    parser.add_argument("--prompt-field", help="field holding the prompt (data.prompt_field; default: prompt)")
    parser.add_argument("--response-field", help="field holding the response (data.response_field; default: response)")
    add_task_arguments(parser)
    parser.add_argument("--system-prompt", help="system message for string prompts (data.system_prompt; default: the task's)")
    add_sft_arguments(parser, "sft")
    parser.add_argument("--eval-size", type=int, help="held-out task problems for the accuracy (eval.size; default: 200)")
    parser.add_argument("--max-new-tokens", type=int,
                        help="response limit when measuring task accuracy (eval.max_new_tokens; default: the task's "
                        "response budget, e.g. arithmetic 64, gsm8k 256)")
    add_run_arguments(parser)


SFT_FLAGS = {
    "model": "model.name", "data": "data.path", "eval_data": "data.eval_path", "prompt_field": "data.prompt_field",
    "response_field": "data.response_field", "system_prompt": "data.system_prompt", "task": "task.name",
    "template": "template", "eval_size": "eval.size", "max_new_tokens": "eval.max_new_tokens",
}
"""Shorthand flag -> the config key it sets (rlvr.config.commands.SFTRunConfig)."""


# --- argument groups shared with `rlvr expert-iter` -------------------------------------------------------


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", help="task name (task.name), e.g. arithmetic")
    parser.add_argument("--task-kwargs", nargs="*", default=[], metavar="KEY=VALUE",
                        help="task options (task.kwargs.KEY=VALUE), values read as YAML scalars, e.g. digits=2")
    parser.add_argument("--template", choices=TEMPLATES, help="prompt template (default: the task's, else chat)")


def add_sft_arguments(parser: argparse.ArgumentParser, section: str) -> None:
    """Shorthands for the keys of rlvr.train.sft.SFTConfig under `section` (sft, or expert_iter.sft)."""
    parser.add_argument("--epochs", type=int, help=f"passes over the data ({section}.epochs; default: 1)")
    parser.add_argument("--lr", type=float, help=f"AdamW learning rate ({section}.lr; default: 1e-5)")
    parser.add_argument("--batch-size", type=int, help=f"records per optimizer step ({section}.batch_size; default: 8)")
    parser.add_argument("--micro-batch-size", type=int,
                        help=f"records per forward pass; gradients accumulate, the result does not change "
                        f"({section}.micro_batch_size; default: the whole batch)")
    parser.add_argument("--aggregation", help=f"loss aggregation ({section}.aggregation): token_mean, "
                        "seq_mean_token_mean, seq_mean_token_sum, seq_mean_token_sum_norm")
    parser.add_argument("--max-len", type=int, help=f"longest prompt + response in tokens ({section}.max_len; default: 512)")
    parser.add_argument("--weight-decay", type=float, help=f"AdamW weight decay ({section}.weight_decay; default: 0)")
    parser.add_argument("--max-grad-norm", type=float,
                        help=f"gradient clipping norm; 0 turns it off ({section}.max_grad_norm; default: 1)")


def sft_flags(section: str) -> dict[str, str]:
    return {name: f"{section}.{name}" for name in ("epochs", "lr", "batch_size", "micro_batch_size", "aggregation",
                                                   "max_len", "weight_decay")}


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="RUN_DIR", help="run directory to create (run_dir)")
    parser.add_argument("--overwrite", action="store_true", help="replace RUN_DIR if it exists")
    parser.add_argument("--seed", type=int, help="seed (seed; default: 0)")
    parser.add_argument("--device", help="torch device (model.device; default: auto, cuda if available)")
    parser.add_argument("--dtype", help="model dtype (model.dtype; default: float32)")
    parser.add_argument("--no-progress", action="store_true", help="no live progress bar")


RUN_FLAGS = {"out": "run_dir", "seed": "seed", "device": "model.device", "dtype": "model.dtype"}


def resolve_command_line(schema: type, args: argparse.Namespace, flags: dict[str, str], sft_section: str):
    """The command's config from its recipe, shorthand flags and overrides (see rlvr.commands._config)."""
    extra = [f"task.kwargs.{k}={json.dumps(v)}" for k, v in parse_task_kwargs(args.task_kwargs).items()]
    if args.task_kwargs and args.task is None and not any(a.startswith("task.name=") for a in args.args):
        raise CommandError("--task-kwargs needs --task")
    if args.max_grad_norm is not None:
        extra.append(f"{sft_section}.max_grad_norm={'null' if args.max_grad_norm == 0 else args.max_grad_norm}")
    return command_config(schema, args, {**flags, **sft_flags(sft_section), **RUN_FLAGS}, extra)


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


def make_task(task_cfg, template: str | None):
    """The task of a command's `task` section, its template defaulting to `template` (else the task's own)."""
    from rlvr.tasks import build_task

    if task_cfg.template is None and template is not None:
        task_cfg = task_cfg.model_copy(update={"template": template})
    try:
        return build_task(task_cfg)
    except (ValueError, TypeError, KeyError, OSError) as err:
        raise CommandError(f"cannot build task {task_cfg.name!r}: {_message(err)}") from None


def prepare_run_dir(out: str, overwrite: bool) -> Path:
    run_dir = Path(out)
    if run_dir.exists() and not run_dir.is_dir():
        raise CommandError(f"run_dir {run_dir} is a file; give a directory")
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise CommandError(f"run directory {run_dir} already exists; pass --overwrite to replace it, or choose "
                               "another --out / run_dir=...")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def load_model_or_fail(model_cfg):
    """(model, tokenizer) of a `model` section (on cuda when available and model.device is auto)."""
    import torch

    from rlvr.models import ModelLoadError, load_model
    from rlvr.train.distributed import Topology

    device = Topology().device(model_cfg.device)
    try:
        return load_model(model_cfg.name, dtype=getattr(torch, model_cfg.dtype), device=str(device),
                          trust_remote_code=model_cfg.trust_remote_code, cache_dir=model_cfg.cache_dir)
    except (ModelLoadError, RuntimeError, ValueError, KeyError, OSError) as err:
        raise CommandError(f"cannot load model {model_cfg.name!r}: {_message(err)}") from None


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
    from rlvr.config.commands import SFTRunConfig

    return run_with_config(SFTRunConfig, args, SFT_FLAGS, "sft", _run)


def run_with_config(schema: type, args: argparse.Namespace, flags: dict[str, str], sft_section: str, body) -> int:
    """Resolve the command's config; print it (--print-config) or run `body(cfg, args, console)` -> run_dir."""
    from rich.console import Console

    from rlvr.train.preflight import preflight

    cfg = resolve_command_line(schema, args, flags, sft_section)
    preflight(cfg)
    if args.print_config:
        print_config(cfg)
        return 0
    console = Console(soft_wrap=True)
    run_dir = body(cfg, args, console)
    console.print(f"done: {run_dir}")
    return 0


def _run(cfg, args: argparse.Namespace, console) -> Path:
    import torch

    from rlvr.logging.jsonl import JsonlWriter
    from rlvr.train.sft import evaluate_loss, save_final_model, sft, task_accuracy

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
        raise CommandError(str(err)) from None
    run_dir = prepare_run_dir(cfg.run_dir, args.overwrite)
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
                 console=console, progress=not args.no_progress)
    t = result.tokenize
    if t.truncated or t.dropped:
        console.print(f"[yellow]{t.truncated} rows cut to max_len {config.max_len} (they lose their eos); "
                      f"{t.dropped} rows dropped (prompt alone fills max_len)")
    save_final_model(run_dir, model, tokenizer, result.steps)
    console.print(f"{result.steps} steps, mean training loss {result.loss_mean:.4f}; model: {run_dir / 'model'}")
    return run_dir
