"""Parity of the vllm engine with the trainer on the embedded model (run from .venv-vllm).

For each sampling setting: the max and mean |sampler - trainer| log-prob over every sampled token (the
trainer's log-probs under the same temperature and filters, rlvr.models.logprobs), then the same after
a few perturbations of the weights pushed through `update_weights` (a stand-in for optimizer steps),
and whether greedy responses equal the hf engine's. Prints one line per setting and a JSON summary.

    OMP_NUM_THREADS=1 .venv-vllm/bin/python benchmarks/vllm_parity.py [--prompts 8 --n 8 --tokens 32]
"""

from __future__ import annotations

import argparse
import json

import torch


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--pushes", type=int, default=3)
    args = ap.parse_args(argv)

    from rlvr.models import load_model
    from rlvr.models.logprobs import response_logprobs
    from rlvr.rollout import SamplingParams, get_engine
    from rlvr.tasks import get_task

    model, tokenizer = load_model(args.model)
    task = get_task("arithmetic", digits=2)
    prompts = [tokenizer(task.prompt(ex, tokenizer), add_special_tokens=False)["input_ids"]
               for ex in task.examples("train", limit=args.prompts)]
    engine, hf = get_engine("vllm", model, tokenizer), get_engine("hf", model, tokenizer)

    def gaps(batch, **filters):
        out = []
        for prompt, response, lps in zip(batch.prompt_ids, batch.response_ids, batch.sampler_logprobs):
            ids = torch.tensor([prompt + response])
            with torch.no_grad():
                lp, _ = response_logprobs(model, ids, torch.ones_like(ids), len(response), packed=False, **filters)
            out += [abs(a - b) for a, b in zip(lps, lp[0].tolist())]
        return max(out), sum(out) / len(out), len(out)

    settings = [dict(temperature=1.0), dict(temperature=0.7), dict(temperature=0.7, top_p=0.9),
                dict(temperature=1.0, top_k=20)]
    results: dict = {"model": args.model, "rounds": []}
    for push in range(args.pushes + 1):
        if push:
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(1e-3 * torch.randn_like(p) * p.abs().mean())
            engine.update_weights(model, push)
        row = {"push": push}
        for s in settings:
            batch = engine.generate(prompts, SamplingParams(n=args.n, max_new_tokens=args.tokens, seed=push, **s))
            mx, mean, count = gaps(batch, **s)
            row[json.dumps(s)] = {"max": mx, "mean": mean, "tokens": count}
            print(f"push {push} {s}: max {mx:.2e}, mean {mean:.2e} over {count} tokens", flush=True)
        g = SamplingParams(n=1, temperature=0.0, max_new_tokens=args.tokens)
        row["greedy_equal"] = engine.generate(prompts, g).response_ids == hf.generate(prompts, g).response_ids
        print(f"push {push} greedy responses equal the hf engine's: {row['greedy_equal']}", flush=True)
        results["rounds"].append(row)
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
