"""The responses' attention of the packed training forward, in one padded block or in length buckets (where
the update's time goes).

`rlvr.models.llama.predicting_hidden_packed` runs the attention of the response tokens on a padded view, and a
masked flash attention computes the whole padded rectangle of queries by keys. The trainer puts the rows in
up to `MAX_LENGTH_BUCKETS` groups of similar length, each padded to its own longest (`length_buckets`). This
benchmark times one layer's response attention, forward and backward (`scaled_dot_product_attention` with the
packed forward's mask: the prompt's keys, then causal over the response), on the shapes a GSM8K-shaped batch
gives (responses of 64-256 tokens, normal around 180, as in `update_allocator.py`; SmolLM2-135M's 9 query heads,
3 key/value heads of 64), for one block and for the buckets, alternating in one process. Usage:

    python benchmarks/attention_buckets.py [--rows 16 64] [--reps 8] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_flags  # noqa: E402

from rlvr.models.llama import MAX_LENGTH_BUCKETS, length_buckets  # noqa: E402


def response_lengths(rows: int, longest: int, seed: int = 0) -> list[int]:
    """Run response tokens per row (each response's real tokens but its last), GSM8K-shaped."""
    g = torch.Generator().manual_seed(seed)
    normal = torch.normal(0.7 * longest, 0.23 * longest, (rows,), generator=g)
    return [int(max(longest // 4, min(longest, x))) - 1 for x in normal.tolist()]


def attention_pass(groups, keys_before: int, heads: int, kv_heads: int, head_dim: int) -> float:
    """Seconds of forward + backward of the response attention over these [(rows, T_b)] groups."""
    inputs = []
    for rows, t in groups:
        n = len(rows)
        q = torch.randn(n, heads, t, head_dim, requires_grad=True)
        k, v = (torch.randn(n, kv_heads, keys_before + t, head_dim, requires_grad=True) for _ in range(2))
        allowed = torch.cat((torch.ones(n, t, keys_before, dtype=torch.bool),
                             torch.ones(t, t, dtype=torch.bool).tril()[None].expand(n, t, t)), dim=2)[:, None]
        inputs.append((q, k, v, allowed))
    t0 = time.perf_counter()
    for q, k, v, allowed in inputs:
        F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, enable_gqa=True).sum().backward()
    return time.perf_counter() - t0


def area(groups, keys_before: int) -> int:
    return sum(len(rows) * t * (keys_before + t) for rows, t in groups)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[16, 64], help="responses in the batch")
    parser.add_argument("--response-tokens", type=int, default=256, help="longest response (max_new_tokens)")
    parser.add_argument("--keys-before", type=int, default=140, help="prompt keys before each response")
    parser.add_argument("--heads", type=int, default=9)
    parser.add_argument("--kv-heads", type=int, default=3)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=30, help="to scale one layer's saving to the model's")
    parser.add_argument("--reps", type=int, default=8, help="passes per layout, alternating; the first is warm-up")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    if args.reps < 2:
        parser.error("--reps must be >= 2 (the first pass is warm-up)")
    torch.set_num_threads(args.threads)
    shape = (args.keys_before, args.heads, args.kv_heads, args.head_dim)
    print(f"CPU flags: {cpu_flags()}; {args.threads} threads; up to {MAX_LENGTH_BUCKETS} buckets", flush=True)
    results = []
    for rows in args.rows:
        lengths = response_lengths(rows, args.response_tokens)
        layouts = {"one block": [(list(range(rows)), max(lengths))], "buckets": length_buckets(lengths, args.keys_before)}
        times: dict[str, list[float]] = {name: [] for name in layouts}
        for rep in range(args.reps):
            for name in layouts if rep % 2 == 0 else list(layouts)[::-1]:
                times[name].append(attention_pass(layouts[name], *shape))
        one, buckets = (statistics.median(times[name][1:]) for name in layouts)
        row = {"rows": rows, "buckets": [[len(r), t] for r, t in layouts["buckets"]],
               "area_ratio": area(layouts["buckets"], args.keys_before) / area(layouts["one block"], args.keys_before),
               "one_block_s": one, "buckets_s": buckets, "ratio": buckets / one,
               # forward + backward here; the checkpointed update runs the forward once more
               "saved_per_update_s": (one - buckets) * args.layers}
        results.append(row)
        print(f"{rows} rows, buckets {row['buckets']} (padded area {row['area_ratio']:.2f}x): one block "
              f"{one * 1e3:.1f} ms, buckets {buckets * 1e3:.1f} ms per layer -> {row['ratio']:.2f}x; "
              f"~{row['saved_per_update_s']:.1f} s less per update of {args.layers} layers", flush=True)
    out = {"cpu_flags": cpu_flags(), "args": vars(args), "results": results}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
