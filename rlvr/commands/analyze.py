"""`rlvr analyze layers MODEL`: the entropy of every layer's internal policy on the model's own responses.

    rlvr analyze layers smollm2-135m-instruct --task arithmetic --limit 64

Samples responses from MODEL (a model name, directory or hub id) to problems of a task, then, over the
response tokens, averages the entropy of each decoder layer's internal policy pi_l = softmax(W_u h_l)
("Bottom-up Policy Optimization", arXiv 2512.19673; rlvr.models.layers), both from the raw residual
stream h_l (BuPO's definition) and through the model's final norm (the logit lens). Prints the table and
writes layers.json and layers.png to --out. The work is rlvr.eval.layers.analyze_layers.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("layers", help="entropy of each layer's internal policy (logit lens) on sampled responses")
    p.add_argument("model", metavar="MODEL", help="an embedded model name, a model directory or a hub id")
    p.add_argument("--task", default="arithmetic", help="task whose problems are answered (default: arithmetic)")
    p.add_argument("--data", help="task data, for dataset tasks (task.kwargs.path)")
    p.add_argument("--split", default="test", help="problems from this split (default: test)")
    p.add_argument("--limit", type=int, default=32, help="problems (default 32)")
    p.add_argument("--n", type=int, default=1, help="responses per problem (default 1)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0; 0: greedy)")
    p.add_argument("--max-new-tokens", type=int, help="response length limit (default: the task's response budget)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per entropy forward (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="output directory (default: ./layers_<model name>)")


def run(args: argparse.Namespace) -> int:
    from rlvr.config import ConfigError, ModelConfig, TaskConfig, resolve_as
    from rlvr.eval.layers import analyze_layers
    from rlvr.models.layers import entropy_table
    from rlvr.rollout import SamplingParams
    from rlvr.tasks import build_task
    from rlvr.train.preflight import check_task
    from rlvr.train.supervised_runs import InputError as CommandError
    from rlvr.train.supervised_runs import load_model_or_fail

    if args.limit < 1 or args.n < 1 or args.batch_size < 1:
        raise CommandError("--limit, --n and --batch-size must be >= 1")
    try:
        kwargs = {"path": args.data} if args.data else {}
        task_cfg = resolve_as(TaskConfig, {"name": args.task, "kwargs": kwargs})
        check_task(task_cfg)
        task = build_task(task_cfg)
        examples = task.examples(args.split, limit=args.limit)
    except (ConfigError, ValueError, KeyError, OSError) as err:
        raise CommandError(f"cannot build task {args.task!r}: {err}") from None
    model, tokenizer = load_model_or_fail(ModelConfig(name=args.model, device=args.device))
    params = SamplingParams(n=args.n, temperature=args.temperature, max_new_tokens=args.max_new_tokens or task.max_new_tokens,
                            seed=args.seed)
    name = Path(args.model).name or args.model
    out = Path(args.out or f"layers_{name.replace('/', '_')}")
    try:
        report = analyze_layers(model, tokenizer, task, examples, params, out, model_name=args.model,
                                task_name=args.task, split=args.split, batch_size=args.batch_size)
    except ValueError:  # the only one here: no response tokens
        raise CommandError("the model produced no response tokens to analyse; raise --max-new-tokens") from None
    print(entropy_table({"raw": report["entropy_raw"], "final_norm": report["entropy_final_norm"]}))
    print(f"wrote {out / 'layers.json'} and {out / 'layers.png'}")
    return 0
