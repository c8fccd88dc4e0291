"""`rlvr expert-iter --model M --task NAME [--task-kwargs k=v ...] --rounds 3 --prompts 64 --k 4 --out RUN_DIR`.

Expert iteration / STaR (rlvr.train.expert_iter): each round samples k responses to `--prompts`
training problems, keeps the verified ones, fine-tunes on them and measures held-out accuracy
(greedy and sampled at --temperature). RUN_DIR gets metrics.jsonl (one row per round, round 0 being
the starting model), samples.jsonl (every sample with whether it was kept and why not), config.yaml,
the final model in RUN_DIR/model and the checkpoints/ layout that `rlvr eval RUN_DIR` loads.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

from rlvr.commands.sft import (
    CommandError,
    add_run_arguments,
    add_sft_arguments,
    add_task_arguments,
    build_task,
    load_model_or_fail,
    parse_task_kwargs,
    prepare_run_dir,
    sft_config,
    write_run_config,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m-instruct",
                        help="model name, hub id or HF directory (default: smollm2-135m-instruct)")
    add_task_arguments(parser, required=True)
    parser.add_argument("--rounds", type=int, default=3, help="sample / filter / fine-tune rounds (default: 3)")
    parser.add_argument("--prompts", type=int, default=64, help="training problems per round (default: 64)")
    parser.add_argument("--k", type=int, default=4, help="samples per problem (default: 4)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: 1.0)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold (default: 1.0)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="response length limit (default: 32)")
    parser.add_argument("--max-per-prompt", type=int, default=None,
                        help="most distinct correct responses kept per problem (default: all)")
    parser.add_argument("--keep-truncated", action="store_true", help="also keep correct responses cut by --max-new-tokens")
    parser.add_argument("--restart-from-base", action="store_true",
                        help="fine-tune the base weights each round, as STaR does (default: continue from the current model)")
    parser.add_argument("--eval-size", type=int, default=200, help="held-out examples for the sampled accuracy (default: 200)")
    parser.add_argument("--engine", default="hf", help="rollout engine (default: hf)")
    add_sft_arguments(parser)
    add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    try:
        run_dir = _run(args, console)
    except CommandError as err:
        print(f"rlvr expert-iter: error: {err}", file=sys.stderr)
        return 2
    except FloatingPointError as err:
        print(f"rlvr expert-iter: stopped: {err}", file=sys.stderr)
        return 1
    console.print(f"done: {run_dir}")
    return 0


def _run(args: argparse.Namespace, console) -> Path:
    import torch

    from rlvr.logging.jsonl import JsonlWriter
    from rlvr.rollout import get_engine
    from rlvr.train.expert_iter import ExpertIterConfig, expert_iteration
    from rlvr.train.sft import save_final_model

    config = ExpertIterConfig(
        rounds=args.rounds, prompts=args.prompts, k=args.k, temperature=args.temperature, top_p=args.top_p,
        max_new_tokens=args.max_new_tokens, max_per_prompt=args.max_per_prompt, keep_truncated=args.keep_truncated,
        restart_from_base=args.restart_from_base, eval_size=args.eval_size, seed=args.seed, sft=sft_config(args),
    )
    try:
        config.check()
    except ValueError as err:
        raise CommandError(str(err)) from None
    template = args.template or "chat"
    task_kwargs = parse_task_kwargs(args.task_kwargs)
    task = build_task(args.task, task_kwargs, template)
    try:
        train_size, test_size = len(task.examples("train")), len(task.examples("test", limit=config.eval_size))
    except (ValueError, KeyError, ImportError, OSError) as err:
        raise CommandError(f"cannot read the problems of task {args.task!r}: {err}") from None
    if not train_size or not test_size:
        raise CommandError(f"task {args.task!r} has {train_size} training and {test_size} held-out problems; it needs both")
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    model, tokenizer = load_model_or_fail(args)
    try:
        engine = get_engine(args.engine, model, tokenizer)
        task.prompt(task.examples("train", limit=1)[0], tokenizer)  # a template the tokenizer lacks fails here
    except (ValueError, KeyError, ImportError) as err:
        raise CommandError(str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)) from None
    run_dir = prepare_run_dir(args.out, args.overwrite)
    write_run_config(run_dir, {
        "command": "expert-iter", "model": args.model,
        "task": {"name": args.task, "kwargs": task_kwargs, "template": template},
        "expert_iter": {k: v for k, v in asdict(config).items() if k != "sft"}, "sft": asdict(config.sft),
    })
    console.print(f"loaded in {time.perf_counter() - t0:.1f}s; {train_size} training problems, {test_size} held-out; "
                  f"run directory: {run_dir}")
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
