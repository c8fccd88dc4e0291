"""The output projection's log-probs in training: the fused chunk (`_HeadLogprobs`) against the generic checkpoint.

The update's last step maps each response token's final hidden state through the output projection to
its log-prob, in chunks of ~341 tokens whose [chunk, 49152] logits are recomputed in the backward pass
(rlvr.models.logprobs). Two ways to do that, alternating in one process on the same inputs:

  checkpoint  torch.utils.checkpoint around `_chunk_logprobs`: the forward run again in the backward
              pass, then autograd's backward of each of its ops (about ten passes over the logits)
  fused       one autograd Function: the backward recomputes the logits once and turns them in place into
              g (onehot - softmax) before the two products (three passes)

Inputs: the embedded model's real output projection (tied to its embeddings, float32), `--tokens` rows of
random hidden states (requires_grad, as the backbone's output would be) and random targets; the loss is
a weighted sum of the log-probs, the entropy a metric (entropy_grad=False, the default recipe's). Each
repeat is forward + backward under `train.release_memory`'s allocator regime; the peak is the resident
set above what was there before the repeat (VmHWM reset through /proc/self/clear_refs, Linux). Prints the
median times, the peaks, the ratio fused / checkpoint, and the largest difference of the two gradients.

    python benchmarks/head_logprobs.py [--tokens 4096] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_flags, status_kb  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="embedded name or local HF directory")
    parser.add_argument("--tokens", type=int, default=4096, help="response tokens (rows) in the call")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per variant, after one warm-up each")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)

    import torch

    import rlvr.models.logprobs as logprobs
    from rlvr.models import load_model
    from rlvr.models.logprobs import _CHUNK_LOGITS, _MIN_CHUNK_TOKENS, head_chunks
    from rlvr.train.memory import freed_memory_returned

    torch.set_num_threads(args.threads)
    model, _ = load_model(args.model, dtype=torch.float32)
    head = model.get_output_embeddings()
    head.weight.data = head.weight.data.clone()  # out of the mmap-ed file (see benchmarks/logprobs.py)
    V, H = head.weight.shape
    chunk = max(_MIN_CHUNK_TOKENS, _CHUNK_LOGITS // V)
    g = torch.Generator().manual_seed(0)
    rows = (torch.randn(args.tokens, H, generator=g) * 2.0).requires_grad_()
    targets = torch.randint(0, V, (args.tokens,), generator=g)
    weights = torch.randn(args.tokens, generator=g)
    print(f"{args.model}: output projection [{V}, {H}], {args.tokens} tokens in chunks of {chunk}, "
          f"{args.threads} threads; CPU flags: {cpu_flags()}", flush=True)

    def run(fused: bool):
        head.weight.grad, rows.grad = None, None
        with freed_memory_returned():
            before = status_kb("VmRSS")
            Path("/proc/self/clear_refs").write_text("5")
            t0 = time.perf_counter()
            keep, logprobs._KEEP_LOGITS = logprobs._KEEP_LOGITS, 0  # every chunk checkpointed, however small the call
            try:
                lp, _ = head_chunks(head, rows, targets, V, chunk_size=chunk, temperature=1.0, return_entropy=True,
                                    top_k=0, top_p=1.0, entropy_grad=False, fused=None if fused else False)
            finally:
                logprobs._KEEP_LOGITS = keep
            t1 = time.perf_counter()
            (torch.cat(lp) * weights).sum().backward()
            t2 = time.perf_counter()
            peak = (status_kb("VmHWM") - before) / 1024
        return {"forward_s": t1 - t0, "backward_s": t2 - t1, "peak_mib": peak}, (rows.grad.clone(), head.weight.grad.clone())

    names = ("checkpoint", "fused")
    rows_of = {n: [] for n in names}
    grads = {}
    for rep in range(args.repeats + 1):
        for name in names if rep % 2 == 0 else names[::-1]:
            res, grads[name] = run(name == "fused")
            if rep:
                rows_of[name].append(res)
    summary = {n: {k: statistics.median(r[k] for r in rows_of[n]) for k in ("forward_s", "backward_s", "peak_mib")}
               for n in names}
    for s in summary.values():
        s["total_s"] = s["forward_s"] + s["backward_s"]
    diff = max(float((a - b).abs().max()) for a, b in zip(grads["fused"], grads["checkpoint"]))
    scale = max(float(t.abs().max()) for t in grads["checkpoint"])
    print(f"{'':12s}{'forward':>10s}{'backward':>10s}{'total':>10s}{'peak above start':>18s}")
    for n, s in summary.items():
        print(f"{n:12s}{s['forward_s']:9.2f}s{s['backward_s']:9.2f}s{s['total_s']:9.2f}s{s['peak_mib']:14.0f} MiB")
    f, c = summary["fused"], summary["checkpoint"]
    print(f"fused / checkpoint: time {f['total_s'] / c['total_s']:.2f}x, peak {f['peak_mib'] / max(c['peak_mib'], 1e-9):.2f}x; "
          f"largest gradient difference {diff:.1e} (largest gradient {scale:.1e})")
    return {"cpu_flags": cpu_flags(), "args": vars(args), "summary": summary, "max_grad_diff": diff,
            "max_grad": scale}


if __name__ == "__main__":
    main()
