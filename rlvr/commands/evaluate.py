"""`rlvr eval MODEL_OR_RUN_DIR [--task gsm8k] [--data PATH] [--n 8 --k 1,4,8] ...`.

MODEL_OR_RUN_DIR is a model (embedded name, hub id or Hugging Face directory) or the directory of an
`rlvr train` run; for a run, the latest checkpoint's model is evaluated and the run's task, task
arguments and prompt template are the defaults. Writes `eval.json` (metrics, settings, timing) and
`eval_samples.jsonl` (one line per response) to --out, and prints a table of the metrics
(rlvr.eval.from_config).
"""

from __future__ import annotations

import argparse
import json

from rlvr.commands._config import add_config_arguments, command_config, print_config
from rlvr.eval.from_config import InputError as EvalCommandError


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
    from rlvr.eval.from_config import evaluate_config
    from rlvr.train.preflight import preflight

    extra = [f"k={json.dumps(_parse_k(args.k))}"] if args.k is not None else []
    cfg = command_config(EvalRunConfig, args, FLAGS, extra)
    preflight(cfg)
    if args.print_config:
        print_config(cfg)
        return 0
    evaluate_config(cfg, Console(soft_wrap=True))
    return 0


def _parse_k(text: str) -> list[int]:
    try:
        ks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise EvalCommandError(f"--k {text!r}: expected comma-separated integers such as 1,4,8") from None
    if not ks:
        raise EvalCommandError("--k is empty; give pass@k values such as 1,4,8")
    return ks
