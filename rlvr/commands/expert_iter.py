"""`rlvr expert-iter [RECIPE.yaml] [key=value ...]`, or with its shorthand flags `--model M --task NAME
[--task-kwargs k=v ...] --rounds 3 --prompts 64 --k 4 --out RUN_DIR`: the config is
rlvr.config.commands.ExpertIterRunConfig (`--print-config` shows it), in the same idiom as `rlvr train`.

Expert iteration / STaR (rlvr.train.expert_iter; the run: rlvr.train.supervised_runs): each round samples k responses to `--prompts`
training problems, keeps the verified ones, fine-tunes on them and measures held-out accuracy
(greedy and sampled at --temperature). RUN_DIR gets metrics.jsonl (one row per round, round 0 being
the starting model), samples.jsonl (every sample with whether it was kept and why not), config.yaml,
the final model in RUN_DIR/model and the checkpoints/ layout that `rlvr eval RUN_DIR` loads.
"""

from __future__ import annotations

import argparse

from rlvr.commands._config import add_config_arguments
from rlvr.commands.sft import add_run_arguments, add_sft_arguments, add_task_arguments, run_with_config


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
    from rlvr.train.supervised_runs import run_expert_iteration

    return run_with_config(ExpertIterRunConfig, args, FLAGS, "expert_iter.sft",
                           lambda cfg, console: run_expert_iteration(cfg, overwrite=args.overwrite, console=console))
