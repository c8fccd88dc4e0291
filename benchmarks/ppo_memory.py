"""PPO's peak memory against GRPO's on the same recipe: what the critic's packed forward and recomputation save.

Each configuration runs in its own process (so that each peak is its own), one after another in this
run: `--steps` training steps of the recipe (default: the default recipe on the embedded model) with

  grpo              algorithm.preset=grpo
  ppo               algorithm.preset=ppo as rlvr runs it: the critic on the packed forward, its layers
                    recomputed in the backward pass (algorithm.critic.checkpoint_activations)
  ppo-no-ckpt       the same without the critic's activation checkpointing
  ppo-padded-critic the critic on the padded forward, no checkpointing (neither saving)

and prints each one's peak RSS (ru_maxrss) and median step time, and the ratios to grpo. Timing is
noisy and these runs are long: read the memory ratios first. Usage:

    python benchmarks/ppo_memory.py [--steps 3] [--recipe default] [--threads 2] [-- extra overrides]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_flags  # noqa: E402

CHILD = r"""
import json, resource, statistics, sys, time
import torch
torch.set_num_threads(int(sys.argv[1]))
if sys.argv[2] == "padded":
    import rlvr.train.critic as critic
    forward = critic.ValueModel.forward
    critic.ValueModel.forward = lambda self, *a, packed=None, **k: forward(self, *a, packed=False, **k)
from rlvr.config import load_recipe, resolve
from rlvr.train.data import PromptStream
from rlvr.train.build import build
cfg = resolve(load_recipe(sys.argv[3]), json.loads(sys.argv[5]))
trainer = build(cfg)
stream = PromptStream(trainer.models.task.examples("train"), cfg.seed)
times = []
for step in range(1, int(sys.argv[4]) + 1):
    t0 = time.perf_counter()
    trainer.step(stream, step)
    times.append(time.perf_counter() - t0)
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("RESULT " + json.dumps({"peak_gib": peak_kib / 2**20, "step_s": statistics.median(times)}))
"""

CONFIGS = {
    "grpo": ("packed", ["algorithm.preset=grpo"]),
    "ppo": ("packed", ["algorithm.preset=ppo"]),
    "ppo-no-ckpt": ("packed", ["algorithm.preset=ppo", "algorithm.critic.checkpoint_activations=false"]),
    "ppo-padded-critic": ("padded", ["algorithm.preset=ppo", "algorithm.critic.checkpoint_activations=false"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--recipe", default="default")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--only", nargs="*", choices=list(CONFIGS), help="run only these configurations")
    parser.add_argument("overrides", nargs="*", help="extra dotted overrides for every configuration")
    args = parser.parse_args()
    base = ["eval.every=0", "checkpoint.every=0", "log_samples=0", *args.overrides]
    print(f"recipe {args.recipe}, {args.steps} steps, {args.threads} threads; CPU flags: {cpu_flags()}")
    results = {}
    for name in args.only or CONFIGS:
        mode, overrides = CONFIGS[name]
        cmd = [sys.executable, "-c", CHILD, str(args.threads), mode, args.recipe, str(args.steps),
               json.dumps(overrides + base + [f"run_dir=/tmp/rlvr_ppo_memory_{name}"])]
        out = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"{name}: failed\n{out.stderr[-2000:]}")
            continue
        results[name] = json.loads(line[len("RESULT "):])
        r = results[name]
        print(f"{name:18s} peak RSS {r['peak_gib']:6.2f} GiB   median step {r['step_s']:6.1f} s", flush=True)
    if "grpo" in results:
        g = results["grpo"]
        for name, r in results.items():
            if name != "grpo":
                print(f"{name:18s} / grpo: memory {r['peak_gib'] / g['peak_gib']:.2f}x, step time "
                      f"{r['step_s'] / g['step_s']:.2f}x")


if __name__ == "__main__":
    main()
