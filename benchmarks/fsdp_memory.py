"""Peak memory per rank of data-parallel training: full copies, FSDP2 gathered per step, FSDP2 per layer (ZeRO-3).

Each configuration runs under `torchrun --nproc_per_node N` (gloo, one thread per rank), one after another in
this run: `--steps` steps of the recipe (default: the default recipe on the embedded model) with

  replicated   train.fsdp=false: every rank holds the whole model, its gradients and its AdamW state
  fsdp-step    train.fsdp=true train.fsdp_reshard=step: sharded between steps, the whole model gathered
               for the whole step
  fsdp-layer   train.fsdp=true train.fsdp_reshard=layer (rlvr's default with FSDP): each decoder layer
               gathered for its own forward and backward only

and prints each rank's peak RSS (ru_maxrss: everything the process ever held, imports and the tokenizer
included) and the median step time. On a CPU the ranks share one machine's memory, so the per-rank peak is
the figure to read; timing with two ranks on two cores says little. Usage:

    python benchmarks/fsdp_memory.py [--ranks 2] [--steps 3] [--recipe default] [-- extra overrides]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, statistics, sys
import torch
torch.set_num_threads(1)
from rlvr.config import load_recipe, resolve
from rlvr.train.data import PromptStream
from rlvr.train.distributed import Topology
from rlvr.train.build import build
recipe, steps, overrides, out = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
topo = Topology.from_env()
cfg = resolve(load_recipe(recipe), overrides + [f"train.steps={steps}", "eval.every=0", "checkpoint.every=0"])
trainer = build(cfg, log=lambda *a, **k: None, topology=topo)
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
stream = PromptStream(trainer.models.task.examples("train"), cfg.seed)
times = [trainer.step(stream, step)["step_time_s"] for step in range(1, steps + 1)]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
rows = topo.all_gather_objects({"rank": topo.rank, "peak_gib": peak, "loaded_gib": loaded,
                                "median_step_s": statistics.median(times[1:] or times)})
if topo.is_main:
    open(out, "w").write(json.dumps(rows))
topo.close()
"""

CONFIGS = {
    "replicated": ["train.fsdp=false"],
    "fsdp-step": ["train.fsdp=true", "train.fsdp_reshard=step"],
    "fsdp-layer": ["train.fsdp=true", "train.fsdp_reshard=layer"],
}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--recipe", default="default")
    ap.add_argument("--only", nargs="+", choices=sorted(CONFIGS))
    ap.add_argument("--json")
    ap.add_argument("overrides", nargs="*", help="extra dotted overrides, after --")
    args = ap.parse_args(argv)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        child = Path(tmp) / "child.py"
        child.write_text(CHILD)
        for name in args.only or list(CONFIGS):
            out = Path(tmp) / f"{name}.json"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.ranks}",
                   str(child), args.recipe, str(args.steps), json.dumps(CONFIGS[name] + args.overrides), str(out)]
            print(f"{name}: {args.ranks} ranks, {args.steps} steps ...", flush=True)
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0 or not out.exists():
                sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
                raise SystemExit(f"{name} failed (exit {proc.returncode})")
            results[name] = json.loads(out.read_text())
    base = max(r["peak_gib"] for r in results.get("replicated", [])) if "replicated" in results else None
    print(f"\n{'configuration':14s}{'peak RSS per rank (GiB)':>26s}{'after load':>12s}{'/ replicated':>14s}"
          f"{'median step':>13s}")
    for name, rows in results.items():
        peak = max(r["peak_gib"] for r in rows)
        ratio = f"{peak / base:.2f}x" if base else "-"
        peaks = ", ".join(f"{r['peak_gib']:.2f}" for r in rows)
        print(f"{name:14s}{peaks:>26s}"
              f"{max(r['loaded_gib'] for r in rows):>12.2f}{ratio:>14s}{max(r['median_step_s'] for r in rows):>12.1f}s")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    return results


if __name__ == "__main__":
    main()
