"""`rlvr sft [RECIPE.yaml] [key=value ...]`, or with its shorthand flags `--model M --data train.jsonl
[--eval-data test.jsonl] [--task NAME] --out RUN_DIR`: the config is rlvr.config.commands.SFTRunConfig
(`--print-config` shows it), in the same idiom as `rlvr train`.

Supervised fine-tuning on (prompt, response) JSONL rows (rlvr.train.sft; the run: rlvr.train.supervised_runs). The prompt field holds the
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
from typing import Any

from rlvr.commands._config import add_config_arguments, command_config, print_config
from rlvr.train.supervised_runs import InputError as CommandError

TEMPLATES = ("chat", "plain", "r1_zero")


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


# --- run ------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    from rlvr.config.commands import SFTRunConfig
    from rlvr.train.supervised_runs import run_sft

    return run_with_config(SFTRunConfig, args, SFT_FLAGS, "sft",
                           lambda cfg, console: run_sft(cfg, overwrite=args.overwrite, console=console,
                                                        progress=not args.no_progress))


def run_with_config(schema: type, args: argparse.Namespace, flags: dict[str, str], sft_section: str, body) -> int:
    """Resolve the command's config; print it (--print-config) or run `body(cfg, console)` -> run_dir."""
    from rich.console import Console

    from rlvr.train.preflight import preflight

    cfg = resolve_command_line(schema, args, flags, sft_section)
    preflight(cfg)
    if args.print_config:
        print_config(cfg)
        return 0
    console = Console(soft_wrap=True)
    run_dir = body(cfg, console)
    console.print(f"done: {run_dir}")
    return 0
