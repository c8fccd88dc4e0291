"""`rlvr expert-iter [RECIPE.yaml] [key=value ...]`, or with its shorthand flags `--model M --task NAME
[--task-kwargs k=v ...] --rounds 3 --prompts 64 --k 4 --out RUN_DIR`: the config is
rlvr.config.commands.ExpertIterRunConfig (`--print-config` shows it), in the same idiom as `rlvr train`.

Expert iteration / STaR (rlvr.train.expert_iter): each round samples k responses to `--prompts`
training problems, keeps the verified ones, fine-tunes on them and measures held-out accuracy
(greedy and sampled at --temperature). RUN_DIR gets metrics.jsonl (one row per round, round 0 being
the starting model), samples.jsonl (every sample with whether it was kept and why not), config.yaml,
the final model in RUN_DIR/model and the checkpoints/ layout that `rlvr eval RUN_DIR` loads.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rlvr.commands._config import add_config_arguments, write_config
from rlvr.commands.sft import (
    CommandError,
    add_run_arguments,
    add_sft_arguments,
    add_task_arguments,
    load_model_or_fail,
    make_task,
    prepare_run_dir,
    run_with_config,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--model", help="model name, hub id or HF directory (model.name; default: smollm2-135m-instruct)")
    add_task_arguments(parser)
    parser.add_argument("--rounds", type=int, help="sample / filter / fine-tune rounds (expert_iter.rounds; default: 3)")
    parser.add_argument("--prompts", type=int, help="training problems per round (expert_iter.prompts; default: 64)")
    parser.add_argument("--k", type=int, help="samples per problem (expert_iter.k; default: 4)")
    parser.add_argument("--temperature", type=float, help="sampling temperature (expert_iter.temperature; default: 1.0)")
    parser.add_argument("--top-p", type=float, help="nucleus sampling threshold (expert_iter.top_p; default: 1.0)")
    parser.add_argument("--max-new-tokens", type=int, help="response length limit (expert_iter.max_new_tokens; default: the "
                        "task's response budget, e.g. arithmetic 64, gsm8k 256)")
    parser.add_argument("--max-per-prompt", type=int,
                        help="most distinct correct responses kept per problem (expert_iter.max_per_prompt; default: all)")
    parser.add_argument("--keep-truncated", action="store_const", const=True,
                        help="also keep correct responses cut by the length limit (expert_iter.keep_truncated)")
    parser.add_argument("--restart-from-base", action="store_const", const=True,
                        help="fine-tune the base weights each round, as STaR does (expert_iter.restart_from_base)")
    parser.add_argument("--eval-size", type=int, help="held-out examples for the sampled accuracy (expert_iter.eval_size)")
    parser.add_argument("--engine", help="rollout engine (engine; default: hf)")
    add_sft_arguments(parser, "expert_iter.sft")
    add_run_arguments(parser)


FLAGS = {"model": "model.name", "task": "task.name", "template": "task.template", "engine": "engine",
         **{name: f"expert_iter.{name}" for name in ("rounds", "prompts", "k", "temperature", "top_p", "max_new_tokens",
                                                     "max_per_prompt", "keep_truncated", "restart_from_base",
                                                     "eval_size")}}
"""Shorthand flag -> the config key it sets (rlvr.config.commands.ExpertIterRunConfig)."""


def run(args: argparse.Namespace) -> int:
    from rlvr.config.commands import ExpertIterRunConfig

    return run_with_config(ExpertIterRunConfig, args, FLAGS, "expert_iter.sft", _run)


def _run(cfg, args: argparse.Namespace, console) -> Path:
    import torch

    from rlvr.logging.jsonl import JsonlWriter
    from rlvr.rollout import get_engine
    from rlvr.train.expert_iter import expert_iteration
    from rlvr.train.sft import save_final_model

    config = cfg.expert_iter.model_copy(update={"seed": cfg.seed, "sft": cfg.expert_iter.sft.model_copy(update={"seed": cfg.seed})})
    task = make_task(cfg.task, "chat")
    try:
        train_size, test_size = len(task.examples("train")), len(task.examples("test", limit=config.eval_size))
    except (ValueError, KeyError, ImportError, OSError) as err:
        raise CommandError(f"cannot read the problems of task {cfg.task.name!r}: {err}") from None
    if not train_size or not test_size:
        raise CommandError(f"task {cfg.task.name!r} has {train_size} training and {test_size} held-out problems; "
                           "it needs both")
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    model, tokenizer = load_model_or_fail(cfg.model)
    try:
        engine = get_engine(cfg.engine, model, tokenizer)
        task.prompt(task.examples("train", limit=1)[0], tokenizer)  # a template the tokenizer lacks fails here
    except (ValueError, KeyError, ImportError) as err:
        raise CommandError(str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)) from None
    run_dir = prepare_run_dir(cfg.run_dir, args.overwrite)
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
