"""Synchronous against asynchronous training (rollout.max_staleness = 0 / K) on the default recipe, side by side.

    .venv/bin/python benchmarks/async_overlap.py                          # K = 0 and 1, 12 steps, seed 0
    .venv/bin/python benchmarks/async_overlap.py --staleness 0 1 2 --seeds 0 1 --steps 12 --json out.json
    .venv/bin/python benchmarks/async_overlap.py --recipe gsm8k_grpo_cpu --steps 4     # the GSM8K-shaped workload
    .venv/bin/python benchmarks/async_overlap.py --staleness 1 -- rollout.worker_threads=1   # cores shared

Each run is its own `rlvr train` process (a recipe, by default the default one on the embedded model, float32, the
recipe's held-out evaluation at the start and the last step only, no intermediate checkpoint), the variants alternating within
each seed so that they share the machine's state. K = 0: one process generates, then trains, with every
core. K >= 1: a rollout worker process generates with half the cores while the trainer trains with the
rest (rlvr.train.pipeline), on weights up to K updates old. Printed per variant: the mean wall time of a
step after the first (the trainer's `step_time_s`, waiting for its batch included), end-to-end generated
tokens per second over those steps, the trainer's and the generator's waits, and the held-out accuracy at
the end with its interval; and the CPU flags.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_flags  # noqa: E402


def run(recipe: str, k: int, seed: int, steps: int, root: Path, extra: list[str]) -> dict:
    run_dir = root / f"k{k}_seed{seed}"
    cmd = [sys.executable, "-m", "rlvr", "train", recipe, f"rollout.max_staleness={k}", f"seed={seed}", f"train.steps={steps}",
           f"eval.every={steps}", "checkpoint.every=0", "rollout.dtype=null", f"run_dir={run_dir}", "--no-progress",
           *extra]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"K={k} seed {seed} failed:\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "reward_mean" in r]
    evals = [r for r in rows if "eval_accuracy" in r]
    timed = train[1:]  # the first step also warms the caches (and, at K >= 1, waits for the first batch)
    per_step = _samples_per_step((run_dir / "config.yaml").read_text())
    tokens = sum(r["response_len_mean"] * per_step for r in timed)
    step_s = sum(r["step_time_s"] for r in timed)
    return {
        "k": k, "seed": seed, "wall_s": wall, "step_s_mean": statistics.mean(r["step_time_s"] for r in timed),
        "gen_s_mean": statistics.mean(r["gen_time_s"] for r in timed),
        "train_s_mean": statistics.mean(r["train_time_s"] for r in timed),
        "tokens_per_s": tokens / step_s, "trainer_wait_time_s_mean": statistics.mean(r.get("trainer_wait_time_s", 0.0) for r in timed),
        "generator_wait_time_s_mean": statistics.mean(r.get("generator_wait_time_s", 0.0) for r in timed),
        "reward_mean_last3": statistics.mean(r["reward_mean"] for r in train[-3:]),
        "eval_accuracy": evals[-1]["eval_accuracy"] if evals else None,
        "eval_ci": [evals[-1]["eval_accuracy_ci_low"], evals[-1]["eval_accuracy_ci_high"]] if evals else None,
        "eval_accuracy_start": evals[0]["eval_accuracy"] if len(evals) > 1 else None,
    }


def _samples_per_step(config_yaml: str) -> int:
    import yaml

    rollout = yaml.safe_load(config_yaml)["rollout"]
    return int(rollout["prompts_per_step"]) * int(rollout["group_size"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--staleness", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--recipe", default="default", help="a bundled recipe or YAML (gsm8k_grpo_cpu: the GSM8K-shaped one)")
    ap.add_argument("--json", help="write every run's figures here")
    ap.add_argument("overrides", nargs="*", help="more overrides for every run (e.g. rollout.max_new_tokens=64)")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="rlvr-async-") as tmp:
        for seed in args.seeds:
            for k in args.staleness:
                r = run(args.recipe, k, seed, args.steps, Path(tmp), args.overrides)
                results.append(r)
                print(f"K={k} seed {seed}: {r['step_s_mean']:.2f} s/step (generation {r['gen_s_mean']:.2f} s, update "
                      f"{r['train_s_mean']:.2f} s), {r['tokens_per_s']:.0f} tok/s end to end, "
                      f"trainer waits {r['trainer_wait_time_s_mean']:.2f} s, generator waits {r['generator_wait_time_s_mean']:.2f} s, "
                      + (f"eval accuracy {r['eval_accuracy']:.3f} [{r['eval_ci'][0]:.3f}, {r['eval_ci'][1]:.3f}]"
                         if r["eval_ci"] else "no held-out evaluation"), flush=True)
    print(f"\nCPU flags: {cpu_flags()}; recipe {args.recipe}, steps {args.steps}, seeds {args.seeds}, "
          f"overrides {args.overrides}")
    print("| K | s/step | tok/s | trainer wait s | generator wait s | reward (last 3) | held-out accuracy |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    base = None
    for k in args.staleness:
        mine = [r for r in results if r["k"] == k]
        step_s = statistics.mean(r["step_s_mean"] for r in mine)
        base = base or step_s
        print(f"| {k} | {step_s:.2f} ({base / step_s:.2f}x) | {statistics.mean(r['tokens_per_s'] for r in mine):.0f} | "
              f"{statistics.mean(r['trainer_wait_time_s_mean'] for r in mine):.2f} | "
              f"{statistics.mean(r['generator_wait_time_s_mean'] for r in mine):.2f} | "
              f"{statistics.mean(r['reward_mean_last3'] for r in mine):.3f} | "
              + ", ".join(f"{r['eval_accuracy']:.3f}" if r["eval_accuracy"] is not None else "-" for r in mine) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
