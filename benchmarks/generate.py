"""Generation throughput: rlvr's "hf" rollout engine against transformers' `model.generate`.

Both run in this process on the same model (default: the embedded SmolLM2-135M-Instruct, float32, CPU)
with the same chat prompts, sampling at temperature 1 from the full distribution (top_k=0, top_p=1:
`generate` would otherwise apply its default top_k=50). The length is forced for both: the engine gets
`ignore_eos=True` and `generate` a generation config without eos, so every row produces exactly
`--new-tokens` tokens and tokens/s = rows * new_tokens / wall time (prefill included). With `--eos`
both stop at eos instead and tokens/s counts the tokens actually generated (up to and including eos;
`generate` keeps computing finished rows, the engine drops them). Each repeat
runs the two back to back, alternating which goes first, so a busy machine slows both alike; the
report gives medians over repeats, the ratio of the medians, and the median of per-repeat ratios.
CPU utilisation (process CPU time / wall time / threads) below ~0.9 means other processes were
competing for the cores; `--wait-idle S` waits (up to S seconds) for an idle machine before each run.

    python benchmarks/generate.py                       # batch 16 and 64, 128 new tokens, 3 repeats
    python benchmarks/generate.py --batch-sizes 64 --repeats 5 --json out.json
    python benchmarks/generate.py --profile engine --batch-sizes 16 --new-tokens 32
    python benchmarks/generate.py --batch-sizes 64 --n 8 --eos   # RL-shaped: 8 prompts x 8 samples
    python benchmarks/generate.py --batch-sizes 64 --new-tokens 128 --floor   # the engine against its floor
    python benchmarks/generate.py --dtypes float32 bfloat16 --only engine   # a bfloat16 rollout copy beside it

`--dtypes`: the first engine also runs on a copy of the weights in each further dtype (as `rollout.dtype` makes
one; `engine_bfloat16` and so on), timed in the same alternation; `--floor` then also times the floor in it.

The floor (`--floor`, forced length only): in the same run, the matrix products the engine's decode steps
must make, timed alone on the model's own weights for the same shapes: per decode step and layer the
q/k/v/o projections and the MLP's three products on [B, H] rows, the two attention products over the
cache ([B, kv, G, D] x [B, kv, D, L] and back, L growing one column per step from the longest prompt),
and the output projection [B, H] x [H, V]; each layer with its own weights and its own cache tensors, so
the weights stream from memory as in the engine (nothing stays hot in cache across layers). Every product
is timed in both layouts, x W^T and (W x^T)^T (the faster one at small batch on some CPUs, which the engine
uses on a float32 CPU model), and the floor is the faster of the two runs. It leaves
out everything else (norms, rotary, softmax, sampling, Python), so no implementation of this forward can
go below it. Reported: the engine's decode time against the decode floor (the fraction of the floor
reached), and the same with and without the attention products.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time

import torch

QUESTIONS = (
    "What is {a} times {b}? Explain step by step.",
    "Write a short poem about the number {a}.",
    "A shop sells pens at {a} cents each. How much do {b} pens cost?",
    "Give three facts about the planet Mars.",
    "Translate 'good morning, {a} friends' into French.",
    "Is {b} a prime number? Answer briefly and explain.",
    "Summarise the rules of chess in two sentences.",
    "List {a} fruits that are red.",
)


def make_prompts(tokenizer, count: int) -> list[list[int]]:
    prompts = []
    for i in range(count):
        text = QUESTIONS[i % len(QUESTIONS)].format(a=i + 2, b=3 * i + 7)
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True)
        prompts.append(list(ids["input_ids"] if hasattr(ids, "keys") else ids))
    return prompts


def run_engine(engine, prompts, new_tokens: int, seed: int, eos: bool = False, n: int = 1) -> dict:
    from rlvr.rollout import SamplingParams

    params = SamplingParams(n=n, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=new_tokens, ignore_eos=not eos,
                            seed=seed)
    start, cpu = time.perf_counter(), time.process_time()
    batch = engine.generate(prompts, params)
    wall = time.perf_counter() - start
    assert eos or batch.num_generated_tokens == len(prompts) * n * new_tokens, batch.response_lengths
    out = {"wall_s": wall, "cpu_s": time.process_time() - cpu, "tokens": batch.num_generated_tokens}
    out.update({k: batch.extra[k] for k in ("prefill_s", "decode_s") if k in batch.extra})  # the hf engine's split
    return out


def run_generate(model, tokenizer, prompts, new_tokens: int, seed: int, eos: bool = False, n: int = 1) -> dict:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    p_len = max(map(len, prompts))
    ids = torch.full((len(prompts), p_len), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, p_len - len(p):] = torch.tensor(p)
        mask[i, p_len - len(p):] = 1
    config = copy.deepcopy(model.generation_config)
    if not eos:
        config.eos_token_id = None  # force the length, as ignore_eos does for the engine
    config.update(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=new_tokens, pad_token_id=pad,
                  num_return_sequences=n)
    torch.manual_seed(seed)
    start, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu
    responses = out[:, p_len:].tolist()
    if eos:
        stops = {tokenizer.eos_token_id, *_as_list(model.generation_config.eos_token_id)}
        tokens = sum(next((i + 1 for i, t in enumerate(r) if t in stops), len(r)) for r in responses)
    else:
        assert out.shape[1] - p_len == new_tokens, out.shape
        tokens = len(prompts) * n * new_tokens
    return {"wall_s": wall, "cpu_s": cpu, "tokens": tokens}


@torch.inference_mode()
def matmul_floor(model, batch: int, prompt_len: int, new_tokens: int, repeats: int = 1) -> dict:
    """Seconds of the decode steps' matrix products alone (see the module docstring), median of `repeats`:
    {"decode_s": all of them, "linear_s": projections, MLPs and output projection only}."""
    import torch.nn.functional as F

    cfg = model.config
    layers = model.model.layers
    hidden, heads, kv = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads
    d = getattr(cfg, "head_dim", None) or hidden // heads
    length = prompt_len + new_tokens
    weights = [(a.q_proj.weight, a.k_proj.weight, a.v_proj.weight, a.o_proj.weight, m.gate_proj.weight,
                m.up_proj.weight, m.down_proj.weight) for a, m in ((lay.self_attn, lay.mlp) for lay in layers)]
    head = model.lm_head.weight
    dtype = head.dtype
    x = torch.randn(batch, hidden, dtype=dtype)
    xi = torch.randn(batch, weights[0][6].shape[1], dtype=dtype)
    q = torch.randn(batch, kv, heads // kv, d, dtype=dtype)
    caches = [(torch.randn(batch, kv, length, d, dtype=dtype), torch.randn(batch, kv, length, d, dtype=dtype))
              for _ in layers]
    steps = new_tokens - 1  # the first token comes from the prefill's logits

    def weight_major(rows, w):
        return torch.mm(w, rows.t())

    def run(attention: bool, lin) -> float:
        start = time.perf_counter()
        for t in range(steps):
            cols = prompt_len + t + 1
            for (wq, wk, wv, wo, wg, wu, wd), (kc, vc) in zip(weights, caches):
                lin(x, wq), lin(x, wk), lin(x, wv)
                if attention:
                    scores = torch.matmul(q, kc[:, :, :cols].transpose(-1, -2))
                    torch.matmul(scores, vc[:, :, :cols])
                lin(x, wo), lin(x, wg), lin(x, wu), lin(xi, wd)
            lin(x, head)
        return time.perf_counter() - start

    # Each product in both layouts the BLAS offers, x W^T and (W x^T)^T (the engine's, on a float32 CPU): the
    # floor is the faster of the two, so no implementation of either layout can go below it.
    out = {}
    for name, lin in (("plain", F.linear), ("weight_major", weight_major)):
        run(True, lin)  # warm-up
        out[f"{name}_decode_s"] = statistics.median(run(True, lin) for _ in range(repeats))
        out[f"{name}_linear_s"] = statistics.median(run(False, lin) for _ in range(repeats))
    out["decode_s"] = min(out["plain_decode_s"], out["weight_major_decode_s"])
    out["linear_s"] = min(out["plain_linear_s"], out["weight_major_linear_s"])
    out["steps"] = steps
    return out


def _as_list(x) -> list:
    return [] if x is None else [x] if isinstance(x, int) else list(x)


def idle_fraction(seconds: float = 1.0) -> float:
    """Fraction of all cores' time that was idle over the next `seconds` (Linux /proc/stat)."""
    def read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
        return ticks[3] + ticks[4], sum(ticks)

    idle0, total0 = read()
    time.sleep(seconds)
    idle1, total1 = read()
    return (idle1 - idle0) / max(1, total1 - total0)


def wait_until_idle(max_wait_s: float, threshold: float = 0.9) -> float:
    """Block until the machine is at least `threshold` idle (other processes off the cores), at most
    `max_wait_s`; returns the last idle fraction seen."""
    deadline = time.monotonic() + max_wait_s
    idle = idle_fraction()
    while idle < threshold and time.monotonic() < deadline:
        idle = idle_fraction()
    return idle


def profile(fn, label: str) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    print(f"--- profile: {label}")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct", help="embedded name or local directory")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eos", action="store_true", help="stop at eos and count actual tokens (default: force the length)")
    ap.add_argument("--n", type=int, default=1,
                    help="samples per prompt (RL group size): a batch of B rows is B/n prompts x n samples")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                    help="before each run, wait up to this long for the other processes to leave the cores")
    ap.add_argument("--only", choices=["both", "engine", "generate"], default="both")
    ap.add_argument("--engine-kwargs", default="{}", help='JSON kwargs for get_engine, e.g. \'{"max_batch_size": 32}\'')
    ap.add_argument("--engines", nargs="+", default=["hf"], choices=["hf", "vllm"],
                    help="rollout engines timed side by side with model.generate (vllm: run from .venv-vllm)")
    ap.add_argument("--profile", choices=["engine", "generate"], help="profile one run of this instead of timing")
    ap.add_argument("--floor", action="store_true",
                    help="also time the decode steps' matrix products alone (forced length) and report the fraction reached")
    ap.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16", "float16"],
                    help="the model's dtype first, then rollout copies in other dtypes timed beside it (engine_<dtype>)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    from rlvr.models import load_model
    from rlvr.rollout import get_engine

    model, tokenizer = load_model(args.model, dtype=getattr(torch, args.dtypes[0]))
    hf_kwargs = json.loads(args.engine_kwargs)
    engines = {name: get_engine(name, model, tokenizer, **(hf_kwargs if name == "hf" else {})) for name in args.engines}
    engine = engines[args.engines[0]]
    copies = {}  # rollout copies in other dtypes, as rlvr.train.runner.build makes them
    for dt in args.dtypes[1:]:
        copies[dt] = copy.deepcopy(model).to(getattr(torch, dt)).eval().requires_grad_(False)
        engines[dt] = get_engine(args.engines[0], copies[dt], tokenizer, **(hf_kwargs if args.engines[0] == "hf" else {}))
    # Warm-up: first calls pay one-off allocations and kernel selection.
    warm = make_prompts(tokenizer, 2)
    for e in engines.values():
        run_engine(e, warm, 4, 0)
    run_generate(model, tokenizer, warm, 4, 0)

    results: dict = {"model": args.model, "engines": args.engines,
                     "threads": args.threads, "new_tokens": args.new_tokens, "eos": args.eos, "n": args.n,
                     "torch": torch.__version__, "load_before": os.getloadavg(), "runs": {}}
    for batch_size in args.batch_sizes:
        if batch_size % args.n:
            raise SystemExit(f"--n {args.n} must divide every batch size (got {batch_size})")
        prompts = make_prompts(tokenizer, batch_size // args.n)
        if args.profile == "engine":
            profile(lambda prompts=prompts: run_engine(engine, prompts, args.new_tokens, 0, args.eos, args.n),
                    f"engine, batch {batch_size}")
            continue
        if args.profile == "generate":
            profile(lambda prompts=prompts: run_generate(model, tokenizer, prompts, args.new_tokens, 0, args.eos, args.n),
                    f"generate, batch {batch_size}")
            continue
        names = (["engine" if i == 0 else f"engine_{e}" for i, e in enumerate(args.engines)]
                 + [f"engine_{dt}" for dt in args.dtypes[1:]] + ["generate"])
        runs: dict[str, list[dict]] = {name: [] for name in names}
        for r in range(args.repeats):
            order = names if r % 2 == 0 else names[::-1]
            for name in order:
                if args.only not in ("both", name.split("_")[0]):
                    continue
                idle_before = wait_until_idle(args.wait_idle) if args.wait_idle else None
                if name.startswith("engine"):
                    which = engines[args.engines[0]] if name == "engine" else engines[name.removeprefix("engine_")]
                    res = run_engine(which, prompts, args.new_tokens, r, args.eos, args.n)
                else:
                    res = run_generate(model, tokenizer, prompts, args.new_tokens, r, args.eos, args.n)
                res["tok_s"] = res["tokens"] / res["wall_s"]
                res["cpu_util"] = res["cpu_s"] / res["wall_s"] / args.threads
                res["idle_before"] = idle_before
                runs[name].append(res)
                print(f"batch {batch_size:4d} repeat {r} {name:9s} {res['tok_s']:8.1f} tok/s  "
                      f"wall {res['wall_s']:7.2f} s  cpu util {res['cpu_util']:.2f}"
                      + (f"  prefill {res['prefill_s']:.2f} s" if "prefill_s" in res else ""), flush=True)
        summary = {name: statistics.median(x["tok_s"] for x in v) for name, v in runs.items() if v}
        for other in [k for k in summary if k.startswith("engine_")]:
            summary[f"{other}_over_engine"] = summary[other] / summary["engine"]
        if "engine" in summary and "generate" in summary:
            summary["ratio_of_medians"] = summary["engine"] / summary["generate"]
            summary["median_ratio"] = statistics.median(
                e["tok_s"] / g["tok_s"] for e, g in zip(runs["engine"], runs["generate"])
            )
        # The floor of each timed engine on its own weights: "" for the model, "<dtype>_" for a rollout copy.
        for prefix, m, name in [("", model, "engine")] + [(f"{dt}_", c, f"engine_{dt}") for dt, c in copies.items()]:
            if not (args.floor and not args.eos and runs.get(name)):
                continue
            decode = statistics.median(x["decode_s"] for x in runs[name])
            floor = matmul_floor(m, batch_size, max(map(len, prompts)), args.new_tokens, repeats=args.repeats)
            summary.update({f"{prefix}floor_{k}": v for k, v in floor.items() if k != "steps"})
            summary[f"{prefix}engine_decode_s"] = decode
            summary[f"{prefix}fraction_of_floor"] = floor["decode_s"] / decode
            summary[f"{prefix}fraction_of_linear_floor"] = floor["linear_s"] / decode
            print(f"batch {batch_size} {str(m.dtype).removeprefix('torch.')}: engine decode {decode:.2f} s for "
                  f"{floor['steps']} steps; matrix products alone {floor['decode_s']:.2f} s (plain "
                  f"{floor['plain_decode_s']:.2f}, weight-major {floor['weight_major_decode_s']:.2f}; "
                  f"{floor['linear_s']:.2f} s without attention): the engine reaches "
                  f"{summary[f'{prefix}fraction_of_floor']:.0%} of the floor "
                  f"({summary[f'{prefix}fraction_of_linear_floor']:.0%} of the linear-only floor)", flush=True)
        results["runs"][batch_size] = {"summary": summary, "repeats": runs}
        print(f"batch {batch_size}: " + ", ".join(f"{k} {v:.2f}" for k, v in summary.items()), flush=True)
    results["load_after"] = os.getloadavg()
    print(f"load average before {results['load_before']}, after {results['load_after']} (2 cores)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
