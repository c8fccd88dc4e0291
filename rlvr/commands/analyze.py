"""`rlvr analyze layers MODEL`: the entropy of every layer's internal policy on the model's own responses.

    rlvr analyze layers smollm2-135m-instruct --task arithmetic --limit 64

Samples responses from MODEL (a model name, directory or hub id) to problems of a task, then, over the
response tokens, averages the entropy of each decoder layer's internal policy pi_l = softmax(W_u h_l)
("Bottom-up Policy Optimization", arXiv 2512.19673; rlvr.models.layers), both from the raw residual
stream h_l (BuPO's definition) and through the model's final norm (the logit lens). Prints the table and
writes layers.json and layers.png to --out.
"""

from __future__ import annotations

import argparse
import json
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
    from rlvr.models.layers import entropy_table, layer_entropies, num_layers, plot_entropies
    from rlvr.rollout import SamplingParams, get_engine
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
    depth = num_layers(model)
    prompts = [tokenizer(task.prompt(ex, tokenizer), add_special_tokens=False)["input_ids"] for ex in examples]
    params = SamplingParams(n=args.n, temperature=args.temperature, max_new_tokens=args.max_new_tokens or task.max_new_tokens,
                            seed=args.seed)
    batch = get_engine("hf", model, tokenizer).generate(prompts, params)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    totals = {"raw": [0.0] * depth, "final_norm": [0.0] * depth}
    tokens = 0
    device = next(model.parameters()).device
    for lo in range(0, len(batch), args.batch_size):
        rows = list(range(lo, min(len(batch), lo + args.batch_size)))
        part = batch.select(rows)
        t = part.to_tensors(pad)
        count = int(t["loss_mask"].sum())
        if not count:
            continue
        means = layer_entropies(model, t["input_ids"].to(device), t["attention_mask"].to(device), t["loss_mask"].shape[1])
        for key in totals:
            totals[key] = [s + m * count for s, m in zip(totals[key], means[key])]
        tokens += count
    if not tokens:
        raise CommandError("the model produced no response tokens to analyse; raise --max-new-tokens")
    entropies = {key: [s / tokens for s in values] for key, values in totals.items()}
    name = Path(args.model).name or args.model
    out = Path(args.out or f"layers_{name.replace('/', '_')}")
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "model": args.model, "architecture": type(model).__name__, "layers": depth, "task": args.task,
        "split": args.split, "problems": len(examples), "n": args.n, "temperature": args.temperature,
        "max_new_tokens": params.max_new_tokens, "response_tokens": tokens, "vocab_size": model.config.vocab_size,
        "entropy_raw": entropies["raw"], "entropy_final_norm": entropies["final_norm"],
        "definition": "entropy (nats) of softmax(W_u h_l) (raw) and softmax(W_u norm(h_l)) (final_norm), h_l the "
                      "residual stream after decoder layer l (1-indexed), averaged over response tokens",
    }
    (out / "layers.json").write_text(json.dumps(report, indent=2) + "\n")
    title = f"{name} on {args.task}: entropy of each layer's policy ({tokens} tokens)"
    plot_entropies(entropies, out / "layers.png", title, vocab_size=model.config.vocab_size)
    print(entropy_table(entropies))
    print(f"wrote {out / 'layers.json'} and {out / 'layers.png'}")
    return 0
