"""The fast decoder's decode step in each of its layouts, on the model and on a rollout copy (where long
generations spend their time).

`rlvr.rollout.decoders.LlamaDecoder` has two choices per decode step: the projections as x W^T or weight-major
(W x^T)^T (`weight_major`), and the attention over the cache as two grouped matmuls or one fused
`scaled_dot_product_attention` (`decode_attention`). Their defaults follow measurements on the CPUs we have;
this benchmark measures them on this one: the hf engine on the embedded model in each `--dtypes` (a copy in
that dtype, as `rollout.dtype` makes it), forced length (ignore_eos), sampling at temperature 1, each variant
of each shape run once per repeat in turn (the order reversed on odd repeats), medians over repeats. Usage:

    python benchmarks/decode_variants.py                          # 8 rows x 512 tokens, 64 rows x 128
    python benchmarks/decode_variants.py --shapes 8x512 --dtypes bfloat16 --repeats 3 --json out.json
    python benchmarks/decode_variants.py --ops                    # the single products behind the choices

The report names the default variant of each dtype on this CPU and each variant's decode time against it.
`--ops` times instead, one layer's worth at a time on the model's shapes (random values, 8 and 64 rows): a decode
step's attention over C cached columns as the grouped matmuls and as `scaled_dot_product_attention` (cache slices
of a longer buffer, as the engine reads them), and each projection as x W^T and as (W x^T)^T.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import make_prompts, run_engine  # noqa: E402
from machine import cpu_flags  # noqa: E402


def parse_shape(text: str) -> tuple[int, int]:
    rows, _, tokens = text.partition("x")
    try:
        return int(rows), int(tokens)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shape is ROWSxTOKENS, e.g. 8x512 (got {text!r})") from None


def timed_us(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps * 1e6


def single_ops(config, dtypes: list[str], reps: int) -> list[dict]:
    """Microseconds of one decode attention and of each projection, in both layouts, per dtype and row count."""
    import torch.nn.functional as F

    heads, kv = config.num_attention_heads, config.num_key_value_heads
    d, hidden = config.hidden_size // heads, config.hidden_size
    shapes = {"q/o": (hidden, hidden), "k/v": (kv * d, hidden), "gate/up": (config.intermediate_size, hidden),
              "down": (hidden, config.intermediate_size), "lm_head": (config.vocab_size, hidden)}
    out = []
    for dt, rows in itertools.product(dtypes, (8, 64)):
        dtype = getattr(torch, dt)
        for cols in (64, 256, 640):
            q = torch.randn(rows, kv, heads // kv, d).to(dtype)
            kc, vc = (torch.randn(rows, kv, cols + 128, d).to(dtype) for _ in range(2))
            mask = torch.zeros(rows, 1, 1, cols + 128, dtype=dtype)
            mask[:, :, :, :8] = float("-inf")  # some left padding
            k, v, m = kc[:, :, :cols], vc[:, :, :cols], mask[..., :cols]

            def matmuls(q=q, k=k, v=v, m=m):
                scores = torch.matmul(q, k.transpose(-1, -2)).mul_(d ** -0.5).add_(m)
                return torch.matmul(torch.softmax(scores, dim=-1, dtype=torch.float32).to(dtype), v)

            def fused(q=q.reshape(rows, heads, 1, d), k=k, v=v, m=m):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=m, scale=d ** -0.5, enable_gqa=True)

            row = {"dtype": dt, "rows": rows, "op": f"attention, {cols} columns",
                   "matmuls_us": timed_us(matmuls, reps), "fused_us": timed_us(fused, reps)}
            out.append(row)
            print(f"{dt:9s} {rows:3d} rows  {row['op']:28s} matmuls {row['matmuls_us']:8.0f} us  "
                  f"fused {row['fused_us']:8.0f} us  ({row['fused_us'] / row['matmuls_us']:.2f}x)", flush=True)
        for name, (n_out, n_in) in shapes.items():
            w, x = torch.randn(n_out, n_in).to(dtype), torch.randn(rows, n_in).to(dtype)
            row = {"dtype": dt, "rows": rows, "op": f"{name} [{n_in} -> {n_out}]",
                   "x_wt_us": timed_us(lambda w=w, x=x: F.linear(x, w), reps),
                   "weight_major_us": timed_us(lambda w=w, x=x: torch.mm(w, x.t()).t(), reps)}
            out.append(row)
            print(f"{dt:9s} {rows:3d} rows  {row['op']:28s} x W^T   {row['x_wt_us']:8.0f} us  "
                  f"(W x^T)^T {row['weight_major_us']:8.0f} us  ({row['weight_major_us'] / row['x_wt_us']:.2f}x)",
                  flush=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--shapes", type=parse_shape, nargs="+", default=[(8, 512), (64, 128)],
                    help="ROWSxTOKENS: rows generated together (one prompt per 8 rows) and forced new tokens")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ops", action="store_true", help="time the single products instead (see above)")
    ap.add_argument("--reps", type=int, default=50, help="with --ops: calls per timing")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"CPU flags: {cpu_flags()}; {args.threads} threads; torch {torch.__version__}", flush=True)
    out = {"cpu_flags": cpu_flags(), "threads": args.threads, "torch": torch.__version__, "model": args.model}
    if args.ops:
        from transformers import AutoConfig

        from rlvr.models import pull

        path = pull(args.model, progress=False) if not Path(args.model).is_dir() else args.model
        out["ops"] = single_ops(AutoConfig.from_pretrained(path), args.dtypes, args.reps)
    else:
        out.update(repeats=args.repeats, results=engine_variants(args))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


def engine_variants(args) -> list[dict]:
    """The engine's decode time in each layout, per dtype and shape (see the module docstring)."""
    from rlvr.models import load_model
    from rlvr.rollout import HFEngine
    from rlvr.rollout.decoders import LlamaDecoder, rows_linear

    model, tokenizer = load_model(args.model, dtype=torch.float32)
    variants = [{"weight_major": w, "decode_attention": a} for w, a in itertools.product((False, True), ("matmul", "sdpa"))]
    results = []
    for dt in args.dtypes:
        m = model if dt == "float32" else copy.deepcopy(model).to(getattr(torch, dt)).eval().requires_grad_(False)
        default = LlamaDecoder(m)
        default_kw = {"weight_major": default.linear is rows_linear,
                      "decode_attention": "sdpa" if default.sdpa_decode else "matmul"}
        engines = [HFEngine(m, tokenizer, **kw) for kw in variants]
        for e in engines:  # warm-up
            run_engine(e, make_prompts(tokenizer, 1), 4, 0, n=2)
        for rows, tokens in args.shapes:
            prompts, n = make_prompts(tokenizer, max(1, rows // 8)), min(rows, 8)
            times: list[list[float]] = [[] for _ in variants]
            for r in range(args.repeats):
                order = range(len(variants)) if r % 2 == 0 else reversed(range(len(variants)))
                for i in order:
                    times[i].append(run_engine(engines[i], prompts, tokens, r, n=n)["decode_s"])
            medians = [statistics.median(t) for t in times]
            base = medians[variants.index(default_kw)]
            print(f"\n{dt}, {len(prompts) * n} rows x {tokens} tokens (default here: {default_kw})")
            for kw, t, med in zip(variants, times, medians):
                mark = "  <- default" if kw == default_kw else ""
                print(f"  weight_major={kw['weight_major']!s:5s} attention={kw['decode_attention']:6s} decode "
                      f"{med:7.2f} s ({med / base:.2f}x the default; {', '.join(f'{x:.2f}' for x in t)}){mark}")
            results.append({"dtype": dt, "rows": len(prompts) * n, "tokens": tokens, "default": default_kw,
                            "variants": [{**kw, "decode_s": t, "median_decode_s": med}
                                         for kw, t, med in zip(variants, times, medians)]})
    return results


if __name__ == "__main__":
    main()
