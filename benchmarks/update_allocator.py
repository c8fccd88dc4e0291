"""The update's forward + backward under glibc's allocator regimes (where the update's time goes).

A GSM8K-shaped batch (groups of 8 responses of 64-256 tokens, normal around 180, after prompts of 100-140
tokens sharing a 40-token system prefix, as `--response-tokens 256 --prompt-tokens 140` give; random token
ids, the embedded model, float32) goes through rlvr's update path: `response_logprobs` (packed forward, each
decoder layer recomputed in the backward pass, the entropy without a graph, as the default recipe trains)
and the backward of the mean response log-prob. Each regime runs in its own fresh process, `--reps` updates
each, the first of which is warm-up:

  heap              glibc as it starts: freed blocks stay on the heap (train.release_memory=false)
  release           every block >= 128 KiB mapped and unmapped when freed, inside
                    `rlvr.train.memory.freed_memory_returned` (train.release_memory=true, the default);
                    mapped blocks are faulted in afresh, 4 KiB at a time
  release+huge      the same with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (what the `rlvr` command starts
                    itself with where THP is in madvise mode): the mapped blocks come in 2 MiB pages
  heap+huge         the heap with the tunable
  mapped>=K KiB     with `--mapped-from K`: blocks from K KiB up mapped during the update, with huge pages
  <lib>[conf]       with `--preload LIB[=CONF]`: another allocator (jemalloc, tcmalloc) put in front of glibc's
                    with LD_PRELOAD, its options in CONF (jemalloc's MALLOC_CONF, e.g. dirty_decay_ms:1000);
                    the update runs as under `heap` (glibc's mallopt settings do not reach it)

With `--buckets K1 K2 ...` each regime runs once per K, the response attention in at most K length buckets
(`rlvr.models.llama.MAX_LENGTH_BUCKETS`; 1: every row padded to the longest response).

With `--rounds R` the regimes run R times, in alternating order, and the medians are over all timed
updates. Prints each regime's median forward, backward and update time and its peak RSS (ru_maxrss), and
each against `release` (the mapped regime without huge pages). Usage:

    python benchmarks/update_allocator.py [--model NAME_OR_DIR] [--groups 2] [--reps 3] [--rounds 1] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_flags  # noqa: E402

from rlvr.train.memory import HUGEPAGE_TUNABLE, MAPPED_FROM, thp_mode  # noqa: E402

CHILD = r"""
import json, resource, sys, time
import torch
threads, groups, reps, mapped_from = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
P, T, name = int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
torch.set_num_threads(threads)
from rlvr.models import load_model
from rlvr.models.logprobs import response_logprobs
from rlvr.train.memory import freed_memory_returned
import os
import rlvr.models.llama as llama
if os.environ.get("BENCH_MAX_LENGTH_BUCKETS"):  # --buckets: the response attention's length buckets
    llama.MAX_LENGTH_BUCKETS = int(os.environ["BENCH_MAX_LENGTH_BUCKETS"])
model, _ = load_model(name, dtype=torch.float32)
model.train()
g = torch.Generator().manual_seed(0)
V, G, S = model.config.vocab_size, 8, min(40, P // 2)
low = min(100, V // 4)  # token ids from here up (a tiny test model's vocabulary is small)
N = groups * G
ids = torch.zeros(N, P + T, dtype=torch.long)
mask = torch.zeros(N, P + T, dtype=torch.long)
prefix = torch.randint(low, V, (S,), generator=g)
for p in range(groups):
    plen = int(torch.randint(max(S + 1, 5 * P // 7), P + 1, (1,), generator=g))
    prompt = torch.cat((prefix, torch.randint(low, V, (plen - S,), generator=g)))
    for j in range(G):
        r = p * G + j
        ids[r, P - plen:P], mask[r, P - plen:P] = prompt, 1
        n = int(max(T // 4, min(T, torch.normal(0.7 * T, 0.23 * T, (1,), generator=g).item())))
        ids[r, P:P + n], mask[r, P:P + n] = torch.randint(low, V, (n,), generator=g), 1
t = int(mask[:, P:].sum(1).max())
ids, mask = ids[:, :P + t], mask[:, :P + t]
rows = []
for _ in range(reps):
    with freed_memory_returned(mapped_from > 0, mapped_from or 1):
        t0 = time.perf_counter()
        lp, _ = response_logprobs(model, ids, mask, t, checkpoint_layers=True, return_entropy=True, entropy_grad=False)
        loss = -(lp.sum() / mask[:, P:].sum())
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        del lp, loss
    model.zero_grad(set_to_none=True)
    rows.append({"forward_s": t1 - t0, "backward_s": t2 - t1})
print("RESULT " + json.dumps({"rows": rows, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                              "tokens": int(mask.sum()), "response_tokens": int(mask[:, P:].sum())}))
"""

# name -> (blocks mapped from this size up during the update, 0: glibc's heap; huge pages; more environment)
REGIMES = {"heap": (0, False, {}), "release": (MAPPED_FROM, False, {}), "release+huge": (MAPPED_FROM, True, {}),
           "heap+huge": (0, True, {})}
ALLOCATOR_ENV = ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "LD_PRELOAD", "MALLOC_CONF", "TCMALLOC_RELEASE_RATE",
                 "BENCH_MAX_LENGTH_BUCKETS")


def preload_regime(spec: str) -> tuple[str, tuple[int, bool, dict]]:
    """`LIB[=CONF]` -> a regime running the heap path with LIB preloaded (CONF: jemalloc's MALLOC_CONF)."""
    lib, _, conf = spec.partition("=")
    if not Path(lib).is_file():
        raise SystemExit(f"--preload {spec}: no file {lib} (jemalloc: apt-get install libjemalloc2, then "
                         "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2)")
    extra = {"LD_PRELOAD": lib, **({"MALLOC_CONF": conf} if conf else {})}
    return Path(lib).name.split(".so")[0].removeprefix("lib") + (f"[{conf}]" if conf else ""), (0, False, extra)


def run_regime(name: str, regime: tuple[int, bool, dict], args: argparse.Namespace) -> dict:
    mapped_from, huge, extra = regime
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}
    env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads), **extra)
    if huge:
        env["GLIBC_TUNABLES"] = HUGEPAGE_TUNABLE
    cmd = [sys.executable, "-c", CHILD, str(args.threads), str(args.groups), str(args.reps), str(mapped_from),
           str(args.prompt_tokens), str(args.response_tokens), args.model]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"{name}: the child failed\n{out.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="embedded name or local HF directory")
    parser.add_argument("--groups", type=int, default=2, help="groups of 8 responses in the batch")
    parser.add_argument("--prompt-tokens", type=int, default=140, help="longest prompt (GSM8K: 100-140)")
    parser.add_argument("--response-tokens", type=int, default=256, help="longest response (max_new_tokens)")
    parser.add_argument("--reps", type=int, default=3, help="updates per process, the first of which is warm-up")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--only", nargs="*", choices=list(REGIMES), help="run only these regimes")
    parser.add_argument("--mapped-from", type=int, nargs="*", default=[], metavar="KIB",
                        help="extra regimes: blocks from KIB KiB up mapped during the update, with huge pages")
    parser.add_argument("--preload", nargs="*", default=[], metavar="LIB[=CONF]",
                        help="extra regimes: this allocator library preloaded (CONF: its MALLOC_CONF)")
    parser.add_argument("--buckets", type=int, nargs="*", default=[], metavar="K",
                        help="run each regime once per K: the response attention in at most K length buckets")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    if args.reps < 2:
        parser.error("--reps must be >= 2 (the first update is warm-up)")
    regimes = {name: REGIMES[name] for name in (REGIMES if args.only is None else args.only)}
    regimes.update({f"mapped>={k}KiB": (k * 1024, True, {}) for k in args.mapped_from})
    regimes.update(preload_regime(spec) for spec in args.preload)
    if args.buckets:
        regimes = {f"{name} b{k}" if len(args.buckets) > 1 else name:
                   (m, huge, {**extra, "BENCH_MAX_LENGTH_BUCKETS": str(k)})
                   for name, (m, huge, extra) in regimes.items() for k in args.buckets}
    names = list(regimes)
    w = max(14, *(len(n) + 1 for n in names))
    print(f"{args.groups} x 8 responses, {args.reps} updates per process ({args.reps - 1} timed), {args.rounds} "
          f"round(s), {args.threads} threads; CPU flags: {cpu_flags()}; THP mode: {thp_mode()}", flush=True)
    timed: dict[str, list[dict]] = {n: [] for n in names}
    peaks: dict[str, list[float]] = {n: [] for n in names}
    info = {}
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            res = run_regime(name, regimes[name], args)
            timed[name] += res["rows"][1:]
            peaks[name].append(res["peak_mib"])
            info = {"tokens": res["tokens"], "response_tokens": res["response_tokens"]}
            ups = [x["forward_s"] + x["backward_s"] for x in res["rows"][1:]]
            print(f"  round {r + 1}: {name:{w - 1}s} updates {', '.join(f'{u:.1f}' for u in ups)} s, "
                  f"peak RSS {res['peak_mib']:.0f} MiB", flush=True)
    print(f"batch: {info['tokens']} real tokens, {info['response_tokens']} response tokens")
    summary = {}
    for name in names:
        rows = timed[name]
        summary[name] = {
            "forward_s": statistics.median(x["forward_s"] for x in rows),
            "backward_s": statistics.median(x["backward_s"] for x in rows),
            "update_s": statistics.median(x["forward_s"] + x["backward_s"] for x in rows),
            "peak_mib": max(peaks[name]),
        }
    base = summary.get("release")
    print(f"{'regime':{w}s}{'forward':>10s}{'backward':>10s}{'update':>10s}{'peak RSS':>11s}"
          + ("   vs release: time, RSS" if base else ""))
    for name, s in summary.items():
        line = (f"{name:{w}s}{s['forward_s']:9.1f}s{s['backward_s']:9.1f}s{s['update_s']:9.1f}s"
                f"{s['peak_mib']:7.0f} MiB")
        if base:
            line += f"   {s['update_s'] / base['update_s']:.2f}x, {s['peak_mib'] / base['peak_mib']:.2f}x"
        print(line)
    out = {"cpu_flags": cpu_flags(), "thp_mode": thp_mode(), "args": vars(args), **info, "regimes": summary,
           "timed": timed}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
