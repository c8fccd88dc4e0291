"""One GRPO step: rlvr's Trainer against TRL's GRPOTrainer on the same work, on this CPU.

    .venv/bin/python benchmarks/vs_trl.py                       # 1 warm-up + 7 timed steps per side
    .venv/bin/python benchmarks/vs_trl.py --steps 11 --rounds 2 --json out.json
    .venv/bin/python benchmarks/vs_trl.py --profile             # where one rlvr step's time goes

Needs TRL (benchmark-only extra): `pip install "trl>=0.20" accelerate datasets psutil`.

The work, identical on both sides: SmolLM2-135M-Instruct (the embedded model; TRL loads its cached
Hugging Face directory), float32, single-digit addition prompts rendered with the tokenizer's chat
template (the same texts in the same order: rlvr's PromptStream with one seed; TRL reads them in order
with shuffle_dataset=False, and the child checks that TRL's prompt token ids equal rlvr's), 4 prompts x 4
samples per step, at most 64 new tokens, temperature 1.0 from the full distribution (top_k 0, top_p 1),
the task's own reward, GRPO advantages (group mean and std), PPO-clip 0.2, per-sequence token mean then
mean over sequences (rlvr preset `grpo` = TRL loss_type="grpo"), no KL (beta 0, no reference model),
one optimizer step per batch (no old-log-prob pass on either side), AdamW lr 1e-6 constant, grad-norm
clip 1.0, the whole batch of 16 in one forward/backward. Differences that remain are each library's
own choice and are part of what is measured: TRL's transformers `generate` (finished rows keep
decoding until the longest is done; each prompt is prefilled once per sample) against rlvr's engine
(one prefill per prompt, finished rows dropped); TRL's padded training forward against rlvr's packed
one (each distinct prompt and the common system prefix run once, responses without padding: the same
loss and gradients up to float rounding, tests/train/test_microbatch.py); both use a fused AdamW;
gradient checkpointing, on by default in TRL, is off on both sides unless `--checkpoint-activations`
turns it on on both (TRL's gradient_checkpointing, rlvr's train.checkpoint_activations: each decoder
layer recomputed in the backward pass); `--micro-batch-size M` cuts the batch into forward/backward
passes of M sequences on both sides (rlvr's train.micro_batch_size; TRL's per-device batch M with
gradient accumulation and steps_per_generation of batch / M, so that one generation still feeds one
optimizer step). The GSM8K-shaped workload (256 tokens) does not fit in 24 GiB without one of them.
`--ignore-eos` makes every response run to `max_new_tokens` on both sides (rlvr's SamplingParams.ignore_eos,
TRL's generation_kwargs min_new_tokens = max_new_tokens), so that both generate and train exactly the same
number of tokens whatever they sample: the cost sweeps then compare the same work, not two draws of lengths.

Method. Each side runs in its own fresh subprocess with 2 torch threads (OMP/MKL too), loads the
model, runs `--steps` steps and reports per-step wall times (rlvr: Trainer.step's step_time_s; TRL: a
TrainerCallback from on_step_begin to on_step_end, which spans generation, reward, forward, backward,
clipping and the optimizer), generation time, token counts, rewards, CPU time, and its own peak RSS
(getrusage ru_maxrss: every byte the process ever had resident, model and imports included). The
first step is warm-up and is excluded. With `--rounds R` the pair runs R times, alternating which side
goes first, so that a change in machine load hits both; medians are over all timed steps.

Arithmetic floor of a step: (2 x params x generated tokens + 6 x params x trained tokens) / 165 GFLOP/s
(docs/design.md, "The CPU machines": float32 matmul peak of this CPU). Generated tokens are the sampled response
tokens (eos included); trained tokens are the real (non-padding) prompt + response tokens that go
through the training forward and backward. Attention FLOPs and prefill are left out (both small here),
so the floor is a lower bound for any implementation that runs every trained token through the
model once per sample (rlvr's packed forward runs a group's shared prompt once, so it can go below).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import ClassVar

MODEL = "smollm2-135m-instruct"
TEMPERATURE, LR = 1.0, 1e-6
PEAK_GFLOPS = 165.0
GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"  # ../shared/data/gsm8k of the checkout
# workload -> (task, task kwargs, prompts per step, samples per prompt, max new tokens); flags override the last three
WORKLOADS = {
    "addition": ("arithmetic", {"digits": 1, "n_terms": 2, "operators": "+"}, 4, 4, 64),
    "gsm8k": ("gsm8k", {"path": str(GSM8K)}, 8, 8, 256),
}


def work(args) -> dict:
    """The workload of `args` (--workload, with --prompts / --samples / --max-new-tokens overriding its sizes)."""
    task, kwargs, prompts, samples, max_new = WORKLOADS[getattr(args, "workload", None) or "addition"]
    given = {k: getattr(args, k, None) for k in ("prompts", "samples", "max_new_tokens")}
    w = {"task": task, "task_kwargs": kwargs, "prompts": given["prompts"] or prompts,
         "samples": given["samples"] or samples, "max_new_tokens": given["max_new_tokens"] or max_new,
         "rollout_dtype": getattr(args, "rollout_dtype", None) or "float32",
         "checkpoint_activations": bool(getattr(args, "checkpoint_activations", False)),
         "micro_batch_size": getattr(args, "micro_batch_size", None),
         "ignore_eos": bool(getattr(args, "ignore_eos", False))}
    batch = w["prompts"] * w["samples"]
    if w["micro_batch_size"] and (batch % w["micro_batch_size"] or w["micro_batch_size"] % w["samples"]):
        raise SystemExit(f"--micro-batch-size must divide the batch of {batch} and be a multiple of the group size "
                         f"{w['samples']} (TRL's accumulation needs whole groups)")
    return w


def rlvr_config(steps: int, seed: int, model: str, w: dict):
    from rlvr.config import resolve

    return resolve({}, [
        f"model.name={model}", "model.dtype=float32", "model.device=cpu", f"seed={seed}",
        f"task.name={w['task']}", f"task.kwargs={json.dumps(w['task_kwargs'])}", "task.template=chat",
        f"rollout.prompts_per_step={w['prompts']}", f"rollout.group_size={w['samples']}",
        f"rollout.max_new_tokens={w['max_new_tokens']}", f"rollout.dtype={w['rollout_dtype']}",
        f"rollout.temperature={TEMPERATURE}", "rollout.top_p=1.0", "rollout.top_k=0",
        "algorithm.preset=grpo", "algorithm.kl.coef=0.0", f"optim.lr={LR}", "optim.scheduler=constant",
        "optim.max_grad_norm=1.0", f"train.steps={steps}", "train.epochs=1", "train.mini_batches=1",
        "eval.every=0", "checkpoint.every=0", f"train.checkpoint_activations={w['checkpoint_activations']}",
        f"train.micro_batch_size={w['micro_batch_size'] or 'null'}",
    ])


def planned_prompts(tokenizer, steps: int, seed: int, w: dict):
    """Per step, the examples of rlvr's PromptStream with `seed`, their chat texts and token ids."""
    from rlvr.tasks import get_task
    from rlvr.train.data import PromptStream

    task = get_task(w["task"], template="chat", **w["task_kwargs"])
    stream = PromptStream(task.examples("train"), seed)
    plan = []
    for _ in range(steps):
        batch = []
        for ex in stream.take(w["prompts"]):
            text = task.prompt(ex, tokenizer)
            batch.append((ex, text, tokenizer(text, add_special_tokens=False)["input_ids"]))
        plan.append(batch)
    return task, plan


def floor_s(params: int, gen_tokens: float, train_tokens: float, gflops: float = PEAK_GFLOPS) -> float:
    """(2 P g + 6 P t) / peak: forward FLOPs of each sampled token plus forward+backward of each trained one."""
    return (2 * params * gen_tokens + 6 * params * train_tokens) / (gflops * 1e9)


def _setup_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _peak_rss_mib() -> float:
    # Linux: KiB. The kernel's high-water mark is updated lazily (per-thread RSS counters are folded in from
    # time to time), so it can trail the RSS just read by a few pages: the peak is at least the current RSS.
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, _rss_mib())


def _rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


# --- the rlvr side ---------------------------------------------------------------------------------


def run_rlvr(args) -> dict:
    _setup_threads(args.threads)
    import torch

    from rlvr.train.build import build
    from rlvr.train.data import PromptStream

    w = work(args)
    cfg = rlvr_config(args.steps, args.seed, args.model, w)
    trainer = build(cfg, log=lambda *a, **k: None)
    _, plan = planned_prompts(trainer.models.tokenizer, args.steps, args.seed, w)
    stream = PromptStream(trainer.models.task.examples("train"), cfg.seed)
    params = sum(p.numel() for p in trainer.models.policy.parameters())
    rss_loaded = _rss_mib()
    gen_cpu = []
    generate = trainer.models.engine.generate

    def timed_generate(*a, **k):  # CPU time of generation (the engine reports only wall time)
        c0 = time.process_time()
        try:
            return generate(*a, **k)
        finally:
            gen_cpu.append(time.process_time() - c0)

    trainer.models.engine.generate = timed_generate
    if w["ignore_eos"]:  # every response runs to max_new_tokens (as TRL's min_new_tokens below)
        params_of = trainer.collector.sampling_params
        trainer.collector.sampling_params = lambda *a, **k: dataclasses.replace(params_of(*a, **k), ignore_eos=True)
    steps = []
    for step in range(1, args.steps + 1):
        cpu0 = time.process_time()
        m = trainer.step(stream, step)
        r = trainer.last_rollouts
        assert [p for p in r.prompt_ids[::w["samples"]]] == [ids for _, _, ids in plan[step - 1]], "prompt plan drifted"
        gen = sum(r.response_lengths)
        prompt = sum(len(p) for p in r.prompt_ids)
        steps.append({
            "step_s": m["step_time_s"], "gen_s": m["gen_time_s"], "train_s": m["train_time_s"],
            "cpu_s": time.process_time() - cpu0, "gen_cpu_s": gen_cpu[-1],
            "gen_tokens": gen, "prompt_tokens": prompt, "train_tokens": gen + prompt,
            "train_tokens_padded": len(r.prompt_ids) * (max(map(len, r.prompt_ids)) + max(r.response_lengths)),
            "reward_mean": m["reward_mean"], "response_len_mean": m["response_len_mean"],
        })
    return {"side": "rlvr", "params": params, "rss_loaded_mib": rss_loaded, "peak_rss_mib": _peak_rss_mib(),
            "threads": torch.get_num_threads(), "steps": steps, "prompt_ids_match": True, "work": w}


# --- the TRL side ----------------------------------------------------------------------------------


def run_trl(args) -> dict:
    _setup_threads(args.threads)
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlvr.models import pull

    model_dir = str(pull(args.model, progress=False)) if args.model == MODEL else args.model
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    w = work(args)
    task, plan = planned_prompts(tokenizer, args.steps, args.seed, w)
    examples = [ex for batch in plan for ex, _, _ in batch]
    expected = {text: ids for batch in plan for _, text, ids in batch}
    data = Dataset.from_dict({"prompt": [t for b in plan for _, t, _ in b], "example": list(range(len(examples)))})

    rewards_seen: list[list[float]] = []

    def task_reward(completions, example, **_):
        out = [float(task.score(c, examples[i]).reward) for c, i in zip(completions, example)]
        rewards_seen.append(out)
        return out

    batch = w["prompts"] * w["samples"]
    micro = w["micro_batch_size"] or batch
    accumulate = batch // micro  # one generation of the whole batch, one optimizer step over it
    out_dir = tempfile.TemporaryDirectory(prefix="vs_trl_")  # save_strategy="no": stays empty
    config = GRPOConfig(
        output_dir=out_dir.name, seed=args.seed, max_steps=args.steps,
        per_device_train_batch_size=micro, gradient_accumulation_steps=accumulate,
        num_generations=w["samples"], steps_per_generation=accumulate, num_iterations=1, shuffle_dataset=False,
        max_completion_length=w["max_new_tokens"], temperature=TEMPERATURE, top_p=1.0, top_k=0,
        beta=0.0, epsilon=0.2, loss_type="grpo", scale_rewards="group",
        learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        bf16=False, fp16=False, use_cpu=True, model_init_kwargs={"dtype": torch.float32},
        gradient_checkpointing=w["checkpoint_activations"],
        logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True, log_completions=False,
        dataloader_num_workers=0,
        generation_kwargs={"min_new_tokens": w["max_new_tokens"]} if w["ignore_eos"] else None,
    )

    class Timer(TrainerCallback):
        def __init__(self):
            self.rows: list[dict] = []

        def on_step_begin(self, *a, **k):
            self.t0, self.cpu0 = time.perf_counter(), time.process_time()

        def on_step_end(self, *a, **k):
            self.rows.append({"step_s": time.perf_counter() - self.t0, "cpu_s": time.process_time() - self.cpu0})

    class TimedGRPO(GRPOTrainer):
        """Times generation + reward and records token counts; checks the prompt token ids."""

        gen_rows: ClassVar[list[dict]] = []
        mismatches = 0

        def _tokenize_prompts(self, prompts):
            ids, images, fields = super()._tokenize_prompts(prompts)
            TimedGRPO.mismatches += sum(list(i) != expected[p] for p, i in zip(prompts, ids))
            return ids, images, fields

        def _generate_and_score_completions(self, inputs):
            t0, c0 = time.perf_counter(), time.process_time()
            out = super()._generate_and_score_completions(inputs)
            gen_cpu = time.process_time() - c0
            pm, cm = out["prompt_mask"], out["completion_mask"]
            gen = int(cm.sum())
            TimedGRPO.gen_rows.append({
                "gen_s": time.perf_counter() - t0, "gen_cpu_s": gen_cpu,
                "gen_tokens": gen, "prompt_tokens": int(pm.sum()),
                "train_tokens": gen + int(pm.sum()),
                "train_tokens_padded": pm.shape[0] * (pm.shape[1] + cm.shape[1]),
                "response_len_mean": gen / cm.shape[0],
            })
            return out

    timer = Timer()
    trainer = TimedGRPO(model=model_dir, reward_funcs=task_reward, args=config, train_dataset=data,
                        processing_class=tokenizer, callbacks=[timer])
    params = sum(p.numel() for p in trainer.models.policy.parameters())
    rss_loaded = _rss_mib()
    trainer.train()
    out_dir.cleanup()
    steps = []
    for t, g, r in zip(timer.rows, TimedGRPO.gen_rows, rewards_seen):
        steps.append({**t, **g, "train_s": t["step_s"] - g["gen_s"], "reward_mean": sum(r) / len(r)})
    if len(steps) != args.steps:
        raise RuntimeError(f"TRL ran {len(steps)} steps, expected {args.steps}")
    return {"side": "trl", "params": params, "rss_loaded_mib": rss_loaded, "peak_rss_mib": _peak_rss_mib(),
            "threads": torch.get_num_threads(), "steps": steps, "prompt_ids_match": TimedGRPO.mismatches == 0,
            "optim": str(config.optim), "work": w}


# --- profile of the rlvr side ----------------------------------------------------------------------


def profile_rlvr(args) -> dict:
    """Phases of rlvr steps (wall and CPU time of each library call, found by wrapping the calls from
    outside), then the same for one more step under torch.profiler, with its op table. Runs in this
    process; the first step is warm-up. Each step's row carries the load average, since a busy CPU
    stretches phases unevenly (many small ops suffer more than a few large ones)."""
    _setup_threads(args.threads)
    import torch
    from torch.profiler import ProfilerActivity, profile

    from rlvr.train.build import build
    from rlvr.train.data import PromptStream

    cfg = rlvr_config(args.steps + 1, args.seed, args.model, work(args))
    trainer = build(cfg, log=lambda *a, **k: None)
    stream = PromptStream(trainer.models.task.examples("train"), cfg.seed)
    trainer.step(stream, 1)
    phases: dict[str, list[float]] = {}
    peaks: dict[str, float] = {}  # the highest RSS (MiB) sampled while each phase ran, this step
    active: list[list[float]] = []  # [peak] of each phase now running, raised by the sampler
    sampling = threading.Event()

    def note(rss: float) -> None:
        for acc in list(active):
            acc[0] = max(acc[0], rss)

    def sample_rss() -> None:  # every 10 ms
        while not sampling.wait(0.01):
            note(_rss_mib())

    threading.Thread(target=sample_rss, daemon=True).start()

    def timed(name, fn):
        def wrapper(*a, **k):
            label = name(*a, **k) if callable(name) else name
            t0, c0 = time.perf_counter(), time.process_time()
            peak = [0.0]
            active.append(peak)
            note(_rss_mib())
            try:
                return fn(*a, **k)
            finally:
                note(_rss_mib())
                del active[next(i for i, acc in enumerate(active) if acc is peak)]  # (== would match equal peaks)
                peaks[label] = max(peaks.get(label, 0.0), peak[0])
                acc = phases.setdefault(label, [0.0, 0.0])
                acc[0] += time.perf_counter() - t0
                acc[1] += time.process_time() - c0
        return wrapper

    def grad_or_not(*a, **k):
        return "forward (log-probs)" if torch.is_grad_enabled() else "old log-probs (no grad)"

    from rlvr.train import optimize, passes, prepare

    for module in (passes, optimize):  # the no-grad passes, and the update's forwards
        module.response_logprobs = timed(grad_or_not, module.response_logprobs)
    for module, name in ((prepare, "compute_advantages"), (optimize, "rl_objective")):
        setattr(module, name, timed("advantages + loss math", getattr(module, name)))
    torch.Tensor.backward = timed("backward", torch.Tensor.backward)
    torch.nn.utils.clip_grad_norm_ = timed("grad-norm clip", torch.nn.utils.clip_grad_norm_)
    trainer.optimizers.policy.step = timed("optimizer step", trainer.optimizers.policy.step)
    trainer.models.engine.generate = timed("generation", trainer.models.engine.generate)
    trainer.collector.score = timed("reward (decode + score)", trainer.collector.score)
    trainer.collector.prompt_ids = timed("prompt render + tokenise", trainer.collector.prompt_ids)
    names = ["generation", "prompt render + tokenise", "reward (decode + score)", "old log-probs (no grad)",
             "forward (log-probs)", "advantages + loss math", "backward", "grad-norm clip", "optimizer step"]

    def one_step(step: int) -> dict:
        phases.clear()
        peaks.clear()
        load = os.getloadavg()[0]
        c0 = time.process_time()
        m = timed("step", trainer.step)(stream, step)
        phases.pop("step")
        r = trainer.last_rollouts
        row = {k: phases.get(k, [0.0, 0.0]) for k in names}
        row["other"] = [m["step_time_s"] - sum(v[0] for v in row.values()),
                        time.process_time() - c0 - sum(v[1] for v in row.values())]
        row["step"] = [m["step_time_s"], time.process_time() - c0]
        return {"phases": row, "peak_rss_mib": dict(peaks), "prefill_s": r.extra["prefill_s"],
                "decode_s": r.extra["decode_s"], "load_1min": load,
                "gen_tokens": sum(r.response_lengths), "longest": max(r.response_lengths)}

    def show(title: str, row: dict) -> None:
        ph = row["phases"]
        print(f"{title}: load {row['load_1min']:.1f}, {row['gen_tokens']} generated tokens (longest {row['longest']}), "
              f"prefill {row['prefill_s']:.2f} s, decode {row['decode_s']:.2f} s")
        for k in names + ["other", "step"]:
            wall, cpu = ph[k]
            peak = f"  peak RSS {row['peak_rss_mib'][k]:7.0f} MiB" if k in row["peak_rss_mib"] else ""
            print(f"  {k:28s}{wall:8.2f} s wall {100 * wall / ph['step'][0]:5.1f} %  {cpu:8.2f} s CPU{peak}")

    rows = [one_step(step) for step in range(2, args.steps + 1)]
    for i, row in enumerate(rows):
        show(f"step {i + 2}", row)
    report = {"rows": rows}
    if not args.phases_only:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            profiled = one_step(args.steps + 1)
        show(f"step {args.steps + 1} (under torch.profiler)", profiled)
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
        print(table)
        report.update(profiled=profiled, op_table=table)
    sampling.set()  # the sampler thread ends
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return report


# --- the parent ------------------------------------------------------------------------------------


SWEEPS = {"tokens": ("max_new_tokens", [64, 128, 256, 512]), "group": ("samples", [4, 8, 16])}


def sweep(args) -> dict:
    """Both sides at each value of one size of the work (the others fixed), one pair of runs each, one after
    the other in this run (alternating which side goes first): median step time and peak RSS per value, how
    each grows from the smallest value, and a PNG."""
    import copy

    field, values = SWEEPS[args.sweep]
    values = args.sweep_values or values
    rows, load_before = [], os.getloadavg()
    for i, value in enumerate(values):
        a = copy.copy(args)
        setattr(a, field, value)
        runs = []
        for side in ["rlvr", "trl"] if i % 2 == 0 else ["trl", "rlvr"]:
            print(f"{field}={value}: {side} ({args.steps} steps) ...", flush=True)
            runs.append(spawn(side, a))
            print(f"  step times: {[round(st['step_s'], 2) for st in runs[-1]['steps']]}", flush=True)
        summary = summarise(runs, args.gflops)
        rows.append({"value": value, "work": work(a), "summary": summary, "runs": runs})
    growth(rows)
    print(f"\n{field} sweep ({args.workload}; {work(args)}); {args.threads} threads each; load before {load_before}, "
          f"after {os.getloadavg()}")
    print(f"{field:>15s}{'rlvr step':>11s}{'TRL step':>10s}{'ratio':>7s}{'rlvr RSS':>10s}{'TRL RSS':>9s}{'ratio':>7s}"
          f"{'rlvr growth':>13s}{'TRL growth':>12s}{'added s/unit rlvr, TRL':>25s}")
    for row in rows:
        s, added = row["summary"], row["added_s_per_unit"]
        print(f"{row['value']:>15d}{s['rlvr']['median_step_s']:>10.2f}s{s['trl']['median_step_s']:>9.2f}s"
              f"{s['ratio_step_time']:>7.2f}{s['rlvr']['peak_rss_mib']:>8.0f}Mi{s['trl']['peak_rss_mib']:>7.0f}Mi"
              f"{s['ratio_peak_rss']:>7.2f}{row['growth']['rlvr']:>12.2f}x{row['growth']['trl']:>11.2f}x"
              + ("" if added is None else f"{added['rlvr']:>15.3f}, {added['trl']:.3f}"))
    report = {"args": vars(args), "field": field, "rows": rows}
    if args.png:
        plot_sweep(rows, field, args.png)
        print(f"figure: {args.png}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return report


def growth(rows: list[dict]) -> None:
    """Per row of a sweep, against the first: each side's step time and peak RSS as multiples (growth,
    memory_growth), and the step time added per added unit of the swept size (added_s_per_unit: seconds per
    token of max_new_tokens or per sample of the group; None on the first row). The multiples favour the
    side with the larger fixed cost per step; the added seconds compare what the added work itself costs."""
    first = rows[0]
    for row in rows:
        s = row["summary"]
        row["growth"] = {side: s[side]["median_step_s"] / first["summary"][side]["median_step_s"] for side in ("rlvr", "trl")}
        row["memory_growth"] = {side: s[side]["peak_rss_mib"] / first["summary"][side]["peak_rss_mib"]
                                for side in ("rlvr", "trl")}
        units = row["value"] - first["value"]
        row["added_s_per_unit"] = None if not units else {
            side: (s[side]["median_step_s"] - first["summary"][side]["median_step_s"]) / units for side in ("rlvr", "trl")}


def plot_sweep(rows: list[dict], field: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["value"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    for side, label in (("rlvr", "rlvr"), ("trl", "TRL")):
        left.plot(xs, [r["summary"][side]["median_step_s"] for r in rows], marker="o", label=label)
        right.plot(xs, [r["summary"][side]["peak_rss_mib"] / 1024 for r in rows], marker="o", label=label)
    for ax, title in ((left, "median GRPO step (s)"), (right, "peak RSS (GiB)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel(field.replace("_", " ").replace("samples", "group size"))
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    left.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def spawn(side: str, args) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    if side == "rlvr":  # the allocator the `rlvr` command starts itself with (rlvr.train.memory)
        from rlvr.train.memory import malloc_env

        if getattr(args, "rlvr_preload", None):  # another allocator in front of glibc's (benchmarks/update_allocator.py)
            env.update(RLVR_MALLOC=args.rlvr_preload, MALLOC_CONF=args.rlvr_malloc_conf)
        env = malloc_env(env) or env
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--side", side, "--out", str(out), "--steps", str(args.steps),
               "--threads", str(args.threads), "--seed", str(args.seed), "--model", args.model,
               "--workload", args.workload]
        for flag in ("prompts", "samples", "max_new_tokens", "rollout_dtype"):
            if getattr(args, flag, None):
                cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        if args.micro_batch_size:
            cmd += ["--micro-batch-size", str(args.micro_batch_size)]
        if args.checkpoint_activations:
            cmd.append("--checkpoint-activations")
        if args.ignore_eos:
            cmd.append("--ignore-eos")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not out.exists():
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
            raise RuntimeError(f"the {side} child failed (exit {proc.returncode}); its output is above")
        result = json.loads(out.read_text())
    result["process_wall_s"] = time.perf_counter() - t0
    return result


def summarise(runs: list[dict], gflops: float) -> dict:
    """Per side: medians over the timed steps (warm-up dropped) of every run of that side."""
    out = {}
    for side in ("rlvr", "trl"):
        mine = [r for r in runs if r["side"] == side]
        timed = [s for r in mine for s in r["steps"][1:]]
        params = mine[0]["params"]
        med = {k: statistics.median(s[k] for s in timed) for k in timed[0] if isinstance(timed[0][k], (int, float))}
        floors = [floor_s(params, s["gen_tokens"], s["train_tokens"], gflops) for s in timed]
        out[side] = {
            **{f"median_{k}": v for k, v in med.items()},
            "timed_steps": len(timed), "params": params,
            "step_s_all": [round(s["step_s"], 3) for s in timed],
            "peak_rss_mib": max(r["peak_rss_mib"] for r in mine),
            "rss_loaded_mib": max(r["rss_loaded_mib"] for r in mine),
            "median_floor_s": statistics.median(floors),
            "median_ratio_to_floor": statistics.median(s["step_s"] / f for s, f in zip(timed, floors)),
            "cpu_utilisation": sum(s["cpu_s"] for s in timed) / sum(s["step_s"] for s in timed) / mine[0]["threads"],
            "prompt_ids_match": all(r["prompt_ids_match"] for r in mine),
        }
    out["ratio_step_time"] = out["rlvr"]["median_step_s"] / out["trl"]["median_step_s"]
    out["ratio_peak_rss"] = out["rlvr"]["peak_rss_mib"] / out["trl"]["peak_rss_mib"]
    return out


# workload -> the goals printed beside each ratio (step time, peak RSS as fractions of TRL's)
TARGETS = {"addition": (0.30, 1.00), "gsm8k": (0.35, 0.60)}


def print_table(s: dict, workload: str) -> None:
    rows = [
        ("median step (s)", "median_step_s", "{:.2f}"), ("  generation (s)", "median_gen_s", "{:.2f}"),
        ("  rest: reward+train (s)", "median_train_s", "{:.2f}"),
        ("median step CPU time (s)", "median_cpu_s", "{:.2f}"),
        ("  generation CPU time (s)", "median_gen_cpu_s", "{:.2f}"), ("peak RSS (MiB)", "peak_rss_mib", "{:.0f}"),
        ("RSS after load (MiB)", "rss_loaded_mib", "{:.0f}"), ("generated tokens/step", "median_gen_tokens", "{:.0f}"),
        ("trained tokens/step", "median_train_tokens", "{:.0f}"),
        ("  padded to the batch", "median_train_tokens_padded", "{:.0f}"),
        ("mean response length", "median_response_len_mean", "{:.1f}"), ("reward mean", "median_reward_mean", "{:.3f}"),
        ("arithmetic floor (s)", "median_floor_s", "{:.3f}"), ("step / floor", "median_ratio_to_floor", "{:.1f}"),
        ("CPU utilisation", "cpu_utilisation", "{:.2f}"), ("timed steps", "timed_steps", "{}"),
    ]
    print(f"{'':28s}{'rlvr':>12s}{'TRL':>12s}")
    for label, key, fmt in rows:
        print(f"{label:28s}{fmt.format(s['rlvr'][key]):>12s}{fmt.format(s['trl'][key]):>12s}")
    time_target, rss_target = TARGETS[workload]
    print(f"rlvr / TRL: step time {s['ratio_step_time']:.2f}x, peak RSS {s['ratio_peak_rss']:.2f}x "
          f"(target: step time <= {time_target:.2f}x at peak RSS <= {rss_target:.2f}x)")
    if not (s["rlvr"]["prompt_ids_match"] and s["trl"]["prompt_ids_match"]):
        print("WARNING: TRL tokenised the prompts differently from rlvr")


def main(argv: list[str] | None = None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8, help="steps per run, the first of which is warm-up (>= 6)")
    ap.add_argument("--model", default=MODEL, help="the embedded name, or a local HF directory (tests: a tiny model)")
    ap.add_argument("--workload", choices=sorted(WORKLOADS), default="addition",
                    help="addition: 4 prompts x 4 samples x 64 tokens; gsm8k: GSM8K training questions, 8 x 8 x 256")
    ap.add_argument("--prompts", type=int, help="prompts per step (default: the workload's)")
    ap.add_argument("--samples", type=int, help="samples per prompt, the group size (default: the workload's)")
    ap.add_argument("--max-new-tokens", type=int, help="(default: the workload's)")
    ap.add_argument("--rollout-dtype", choices=["float32", "bfloat16", "auto"], default="float32",
                    help="rlvr's rollout copy (TRL generates with the float32 model: float32 is the same work)")
    ap.add_argument("--sweep", choices=["tokens", "group"],
                    help="tokens: --max-new-tokens 64 128 256 512; group: --samples 4 8 16; one pair of runs each")
    ap.add_argument("--sweep-values", type=int, nargs="+", help="the values to sweep (default: above)")
    ap.add_argument("--png", help="with --sweep: write the cost figure here")
    ap.add_argument("--rounds", type=int, default=1, help="runs of each side, alternating which goes first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gflops", type=float, default=PEAK_GFLOPS, help="float32 matmul peak for the floor")
    ap.add_argument("--checkpoint-activations", action="store_true",
                    help="recompute each layer in the backward pass on both sides (TRL's default gradient checkpointing)")
    ap.add_argument("--micro-batch-size", type=int, help="sequences per forward/backward on both sides")
    ap.add_argument("--ignore-eos", action="store_true",
                    help="every response runs to max_new_tokens on both sides (the same work, whatever is sampled)")
    ap.add_argument("--rlvr-preload", metavar="LIB", help="rlvr's side only: this allocator library LD_PRELOADed "
                    "instead of the command's own choice (RLVR_MALLOC: mimalloc where installed); TRL's keeps glibc's")
    ap.add_argument("--rlvr-malloc-conf", default="dirty_decay_ms:1000,muzzy_decay_ms:0",
                    help="with --rlvr-preload: MALLOC_CONF for jemalloc (ignored by the others)")
    ap.add_argument("--only", choices=["both", "rlvr", "trl"], default="both")
    ap.add_argument("--profile", action="store_true",
                    help="time the phases of rlvr steps (wall, CPU, peak RSS of each) and profile one more")
    ap.add_argument("--phases-only", action="store_true", help="with --profile: the phases only, no torch.profiler step")
    ap.add_argument("--json", help="write all results here")
    ap.add_argument("--side", choices=["rlvr", "trl"], help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.side:
        result = run_rlvr(args) if args.side == "rlvr" else run_trl(args)
        Path(args.out).write_text(json.dumps(result))
        return None
    if args.profile:
        return profile_rlvr(args)
    if args.steps < 2:
        ap.error("--steps must be >= 2 (one warm-up step, then the timed ones; >= 6 for a meaningful median)")
    if args.steps < 6:
        print(f"warning: {args.steps - 1} timed steps per run; the issue asks for at least 5", file=sys.stderr)
    if args.only != "rlvr":
        try:
            import trl  # noqa: F401
        except ImportError:
            ap.error('TRL is not installed: pip install "trl>=0.20" accelerate datasets psutil (extra bench-trl)')

    if args.sweep:
        return sweep(args)
    load_before = os.getloadavg()
    runs = []
    sides = ["rlvr", "trl"] if args.only == "both" else [args.only]
    for rnd in range(args.rounds):
        for side in sides if rnd % 2 == 0 else sides[::-1]:
            print(f"round {rnd + 1}/{args.rounds}: {side} ({args.steps} steps) ...", flush=True)
            runs.append(spawn(side, args))
            print(f"  step times: {[round(s['step_s'], 2) for s in runs[-1]['steps']]}", flush=True)
    load_after = os.getloadavg()
    report = {"load_before": load_before, "load_after": load_after, "args": vars(args), "runs": runs}
    print(f"load average (1/5/15 min) before {load_before}, after {load_after}; {args.threads} threads each")
    if args.only == "both":
        report["summary"] = summarise(runs, args.gflops)
        print_table(report["summary"], args.workload)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
