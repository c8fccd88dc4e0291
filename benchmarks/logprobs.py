"""Peak memory of response log-probs: naive (full logits + log_softmax) vs rlvr's chunked version.

    .venv/bin/python benchmarks/logprobs.py                 # SmolLM2-135M, N=16, P=64, T=256, all modes
    .venv/bin/python benchmarks/logprobs.py --modes no_grad --n 8

Method. Each (variant, mode) runs in a fresh Python process, so no allocator state carries over.
The process loads the model and copies the weights out of their mmap-ed safetensors file into
ordinary memory (file pages could otherwise be dropped and faulted in again during the step; under
memory pressure that moved one peak by 600 MB), builds the batch (and, for backward modes, allocates
the parameter gradients: in a training loop they persist between steps, so they count as part of
the model), then resets the kernel's peak-RSS counter (`echo 5 > /proc/self/clear_refs` sets VmHWM
to the current RSS), runs the measured step once, and reads VmHWM. "Peak above the model" is VmHWM
minus the RSS just before the step: every byte the step touched at its peak, whatever allocated it
(torch, oneDNN, glibc), with nothing sampled or estimated.

The workers run with MALLOC_MMAP_THRESHOLD_=131072: every block of 128 KiB or more is then its own
mapping, returned to the kernel when freed, so RSS follows the live tensors. With glibc's default (a
threshold that rises to 32 MiB, so [N, L, H] activations come from the heap, which fragments and is
rarely given back) the same step shows a far higher RSS; `--glibc-default` measures that instead.
Times are of that same single step (first call, so they include one-time setup, and they depend on
what else the machine runs). Linux only (/proc).

Modes: `no_grad` (old / reference log-probs), `train` (forward + backward of the log-probs' sum,
gradient checkpointing on the backbone), `train_no_ckpt` (forward + backward,
backbone activations all kept).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import status_kb  # noqa: E402

VARIANTS = ("naive", "chunked")
MODES = ("no_grad", "train", "train_no_ckpt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="embedded name or local directory")
    parser.add_argument("--n", type=int, default=16, help="sequences in the batch")
    parser.add_argument("--prompt", type=int, default=64, help="P: prompt columns (prompts of 48..P tokens)")
    parser.add_argument("--response", type=int, default=256, help="T: response tokens")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--chunk-size", type=int, default=None, help="chunked variant's chunk_size (default: its own)")
    parser.add_argument("--glibc-default", action="store_true", help="keep glibc's dynamic mmap threshold")
    parser.add_argument("--worker", nargs=2, metavar=("VARIANT", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args, *args.worker)))
        return

    allocator = "glibc default" if args.glibc_default else "MALLOC_MMAP_THRESHOLD_=131072"
    print(f"model {args.model}, N={args.n}, P={args.prompt}, T={args.response}; peak RSS above the model, "
          f"fresh process each, {allocator}")
    print(f"{'mode':<15}{'naive MB':>10}{'chunked MB':>12}{'ratio':>8}{'naive s':>9}{'chunked s':>11}")
    for mode in args.modes:
        result = {}
        for variant in VARIANTS:
            cmd = [sys.executable, __file__, "--worker", variant, mode, "--model", args.model, "--n", str(args.n),
                   "--prompt", str(args.prompt), "--response", str(args.response)]
            if args.chunk_size:
                cmd += ["--chunk-size", str(args.chunk_size)]
            env = dict(os.environ) if args.glibc_default else {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
            done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
            if done.returncode != 0:
                sys.exit(f"{variant}/{mode} failed:\n{done.stderr[-3000:]}")
            result[variant] = json.loads(done.stdout.strip().splitlines()[-1])
        naive, chunked = result["naive"], result["chunked"]
        ratio = chunked["peak_mb"] / naive["peak_mb"]
        print(f"{mode:<15}{naive['peak_mb']:>10.0f}{chunked['peak_mb']:>12.0f}{ratio:>8.2f}"
              f"{naive['seconds']:>9.1f}{chunked['seconds']:>11.1f}")
        err = chunked.get("max_abs_diff")
        if err is not None:
            print(f"{'':<15}max |chunked - naive| log-prob over the batch: {err:.1e}")


def measure(args, variant: str, mode: str) -> dict:
    import torch

    from rlvr.models import load_model
    from rlvr.models.logprobs import position_ids_from_mask, response_logprobs

    torch.manual_seed(0)
    model, tok = load_model(args.model)
    n, P, T = args.n, args.prompt, args.response
    input_ids = torch.randint(100, model.config.vocab_size, (n, P + T))
    attention_mask = torch.ones(n, P + T, dtype=torch.long)
    for i in range(n):  # left-padded prompts of 48..P tokens
        pad = (i * 5) % (P - 47) if P > 48 else 0
        attention_mask[i, :pad] = 0
        input_ids[i, :pad] = tok.pad_token_id

    train = mode != "no_grad"
    if mode == "train":
        model.gradient_checkpointing_enable()
    if train:
        model.train()
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
    model.config.use_cache = False
    # The weights are mmap-ed from safetensors: file pages the kernel may drop and fault in again during
    # the step (it did, under memory pressure, moving a peak by 600 MB). Copy them to anonymous memory.
    for p in model.parameters():  # tied weights are one Parameter: copied once, still tied
        p.data = p.data.clone()

    def naive_step():
        logits = model(input_ids=input_ids, attention_mask=attention_mask,
                       position_ids=position_ids_from_mask(attention_mask), use_cache=False).logits
        logp = torch.log_softmax(logits[:, P - 1 : -1].float(), dim=-1)
        return logp.gather(-1, input_ids[:, P:, None]).squeeze(-1)

    def chunked_step():
        return response_logprobs(model, input_ids, attention_mask, T, chunk_size=args.chunk_size)[0]

    step = naive_step if variant == "naive" else chunked_step

    def run():
        with torch.set_grad_enabled(train):
            lp = step()
            if train:
                lp.sum().backward()
        return lp.detach()

    gc.collect()
    before = status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    start = time.perf_counter()
    lp = run()
    seconds = time.perf_counter() - start
    peak = status_kb("VmHWM")
    out = {"peak_mb": (peak - before) / 1024, "seconds": seconds}
    if variant == "chunked" and not train:
        with torch.no_grad():
            out["max_abs_diff"] = float((lp - naive_step()).abs().max())
    return out


if __name__ == "__main__":
    main()
