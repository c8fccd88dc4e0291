"""Data-parallel training: `torchrun --nproc_per_node 2 -m rlvr train ...` on CPU (gloo) gives
the update of one process on the same global batch.

Each test launches the real command line twice, once as one process and once under torchrun with two
ranks, on the tiny model, and compares every logged metric and the final weights. Tolerances: values
that are rounding noise around 0 (a loss of ~1e-8, log-prob mismatches of ~1e-7) are compared with an
absolute tolerance of 1e-6, fractions of tokens (clip fractions, which a token at the boundary can
flip) to 5e-3; everything else to 1e-5 relative; weights to 1e-5 relative, 1e-6 absolute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

TIMING = ("_time_s", "tokens_per_s")
BASE = [
    "model.device=cpu", "task.name=symbol", "task.template=chat", "rollout.prompts_per_step=8",
    "rollout.group_size=8", "rollout.max_new_tokens=4", "optim.lr=3e-3", "eval.every=0", "checkpoint.every=0",
    "log_samples=0", "optim.eps=1e-4", "rollout.dtype=null",
]
# rollout.dtype=null: sample with the model's float32 weights. The default recipe's `auto` gives a bfloat16
# copy on a CPU with native bf16, whose products round differently at each rank's smaller decode batch, so
# two ranks would not draw the same samples as one process to float tolerance.
# optim.eps: Adam's first steps move each weight by about lr * sign(gradient), so a gradient that is
# rounding noise around 0 (summed in another order by two ranks) would move a weight by +-lr and the
# weights could not be compared to float tolerance; eps = 1e-4 keeps such updates ~1e-4 of lr while
# every real gradient (1e-3 and up here) still gets Adam's normalised step.


FAULTS = str(Path(__file__).with_name("faults.py"))
"""The test plugin that injects faults (RLVR_FAULT_*), loaded at start-up by every rank when a test asks for one."""


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RLVR_FAULT", "RLVR_PLUGINS"))}
    env.update(OMP_NUM_THREADS="1", **extra)
    if any(k.startswith("RLVR_FAULT") for k in extra):
        env["RLVR_PLUGINS"] = FAULTS
    return env


def launch(tiny_dir, run_dir, ranks, *overrides, env=None, resume=False, timeout=300):
    args = [f"model.name={tiny_dir}", *BASE, *overrides]
    tail = ["--resume", str(run_dir)] if resume else [f"run_dir={run_dir}", "--overwrite"]
    if ranks == 1:
        cmd = [sys.executable, "-m", "rlvr", "train", *(args if not resume else overrides), *tail, "--no-progress"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
               "-m", "rlvr", "train", *(args if not resume else overrides), *tail, "--no-progress"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env or _env(), timeout=timeout)


def metrics(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.endswith(TIMING)} for r in rows]


def final_weights(run_dir):
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    model = run_dir / "checkpoints" / latest / "model"
    adapter = model / "adapter_model.safetensors"  # a LoRA run saves its adapter only
    return load_file(str(adapter if adapter.exists() else model / "model.safetensors"))


def assert_same_run(a, b, what=""):
    ma, mb = metrics(a), metrics(b)
    assert len(ma) == len(mb) > 0
    for ra, rb in zip(ma, mb):
        assert set(ra) == set(rb), set(ra) ^ set(rb)
        for k, va in ra.items():
            vb = rb[k]
            if isinstance(va, float) and isinstance(vb, float):
                # A fraction of tokens at a clip boundary may flip by one token under rounding.
                atol = 5e-3 if k.endswith("_frac") else 1e-6
                assert abs(va - vb) <= atol + 1e-5 * abs(va), f"{what} step {ra['step']} {k}: {va} vs {vb}"
            else:
                assert va == vb, f"{what} step {ra['step']} {k}: {va} vs {vb}"
    wa, wb = final_weights(a), final_weights(b)
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-5, atol=1e-6, msg=f"{what}: weight {name}")


def _ok(out):
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


CASES = {
    "grpo": ["algorithm.preset=grpo", "train.steps=3"],
    "grpo-async": ["algorithm.preset=grpo", "train.steps=3", "rollout.max_staleness=1", "rollout.worker_threads=1"],
    "dapo": ["algorithm.preset=dapo", "algorithm.overlong.cache_len=2", "train.steps=3"],
    "reinforce_pp": ["algorithm.preset=reinforce_pp", "algorithm.kl.coef=0.05", "train.steps=3"],
    "ppo": ["algorithm.preset=ppo", "algorithm.critic.lr=3e-3", "train.steps=2"],
    "grpo-kl-minibatches": ["algorithm.preset=grpo", "algorithm.kl.coef=0.1", "train.mini_batches=2",
                            "train.epochs=2", "train.micro_batch_size=5", "train.steps=3"],
}
# FSDP2: the policy, the reference and the critic sharded (train.fsdp); the single process ignores it.
CASES.update({
    "grpo-fsdp": ["algorithm.preset=grpo", "train.steps=3", "train.fsdp=true", "eval.every=3", "eval.size=8"],
    "ppo-fsdp": ["algorithm.preset=ppo", "algorithm.critic.lr=3e-3", "train.steps=2", "train.fsdp=true"],
    "grpo-kl-minibatches-fsdp": [*CASES["grpo-kl-minibatches"], "train.fsdp=true"],
    # dynamic sampling's rounds give the ranks uneven (or no) rows: per-layer sharding pads their micro-batches
    "dapo-fsdp": [*CASES["dapo"], "train.fsdp=true", "train.micro_batch_size=3"],
    "grpo-fsdp-step": ["algorithm.preset=grpo", "train.steps=2", "train.fsdp=true", "train.fsdp_reshard=step"],
})


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_ranks_give_the_update_of_one_process(tiny_dir, tmp_path, case):
    one, two = tmp_path / "one", tmp_path / "two"
    _ok(launch(tiny_dir, one, 1, *CASES[case]))
    _ok(launch(tiny_dir, two, 2, *CASES[case]))
    assert_same_run(one, two, case)


def test_the_check_detects_per_rank_denominators(tiny_dir, tmp_path):
    """Negative control: each rank normalising its loss by its own token count is the classic bug."""
    one, two = tmp_path / "one", tmp_path / "two"
    overrides = ["algorithm.preset=grpo", "train.steps=2"]  # both ranks hold rows of the one mini-batch
    _ok(launch(tiny_dir, one, 1, *overrides))
    _ok(launch(tiny_dir, two, 2, *overrides, env=_env(RLVR_FAULT_LOCAL_DENOMINATORS="1")))
    with pytest.raises(AssertionError):
        assert_same_run(one, two, "per-rank denominators")


@pytest.mark.parametrize("first, then, fsdp", [(2, 1, False), (1, 2, False), (2, 1, True), (1, 2, True)])
def test_resume_on_another_number_of_ranks(tiny_dir, tmp_path, first, then, fsdp):
    """A run stopped after step 2 on `first` ranks and resumed on `then` logs what an uninterrupted run logs
    (the optimizer state is written with torch.distributed.checkpoint, each FSDP2 rank its own shards, and
    resharded as it is read)."""
    overrides = ["algorithm.preset=grpo", "algorithm.kl.coef=0.05", "train.mini_batches=2", "train.epochs=2",
                 f"train.fsdp={str(fsdp).lower()}"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    _ok(launch(tiny_dir, whole, 1, *overrides, "train.steps=4"))
    _ok(launch(tiny_dir, parts, first, *overrides, "train.steps=2"))
    shards = sorted(p.name for p in (parts / "checkpoints" / "step_000002" / "optimizer").glob("*.distcp"))
    if fsdp:
        assert len(shards) == first, shards  # every rank wrote its own shards
    _ok(launch(tiny_dir, parts, then, "train.steps=4", resume=True))
    assert_same_run(whole, parts, f"{first} -> {then} ranks")


def test_a_failing_rank_stops_every_rank_with_its_error(tiny_dir, tmp_path):
    start = time.perf_counter()
    out = launch(tiny_dir, tmp_path / "run", 2, "algorithm.preset=grpo", "train.steps=4", "train.collective_timeout_s=60",
                 env=_env(RLVR_FAULT_RAISE="1:2"), timeout=240)
    elapsed = time.perf_counter() - start
    assert out.returncode != 0
    assert elapsed < 120, elapsed
    # rank 1 says its error in one line (its traceback is in the run directory); rank 0 stops with one line
    # naming it, not with a "connection reset" traceback of its own
    tracebacks = [line for line in out.stderr.splitlines()
                  if line.startswith("[rank") and line.endswith("Traceback (most recent call last):")]
    assert tracebacks == [], tracebacks
    assert "rlvr train: error: injected failure on rank 1 at step 2" in out.stderr
    assert "stopped: rank 1 failed with RuntimeError: injected failure on rank 1 at step 2" in out.stderr
    saved = (tmp_path / "run" / "errors" / "traceback_rank1.txt").read_text()
    assert saved.startswith("Traceback (most recent call last):") and "RLVR_FAULT_RAISE" in saved
    assert "Connection reset" not in out.stderr


@pytest.mark.parametrize("mode", ["r2", "r3"])
def test_two_ranks_replay_the_routes_of_their_own_rows(tiny_moe_dir, tmp_path, mode):
    """Routing replay (rlvr.train.routing) on the tiny Qwen3-MoE: the routes travel with each rank's rows."""
    case = ["algorithm.preset=grpo", "train.mini_batches=2", "train.micro_batch_size=5", "train.steps=3",
            f"algorithm.routing_replay={mode}"]
    one, two = tmp_path / "one", tmp_path / "two"
    _ok(launch(tiny_moe_dir, one, 1, *case))
    _ok(launch(tiny_moe_dir, two, 2, *case))
    assert_same_run(one, two, f"moe-{mode}")
    assert any(r["routing_mismatch"] > 0 for r in metrics(one))


def test_full_weights_gathers_fsdp_shards_bucket_by_bucket():
    """The weights an engine with its own copy (vllm) receives from an FSDP2-sharded policy: the full state dict,
    tied entries included, for any bucket size and for dims that do not split evenly."""
    from pathlib import Path

    worker = Path(__file__).with_name("full_weights_worker.py")
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(worker)], capture_output=True, text=True, env=_env(), timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "rank 0: full weights OK" in out.stdout and "rank 1: full weights OK" in out.stdout


@pytest.mark.parametrize("mode", ["layer", "step"])
def test_fsdp_streams_the_layers_and_sums_the_gradients(mode):
    """train.fsdp_reshard=layer (ZeRO-3): while a decoder layer runs, the one before it is back in its shards, and
    the gradients FSDP2 reduce-scatters are the sum over ranks (the whole batch's). "step" holds all layers."""
    from pathlib import Path

    worker = Path(__file__).with_name("streaming_worker.py")
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(worker), mode], capture_output=True, text=True, env=_env(), timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"rank 0: {mode} OK" in out.stdout and f"rank 1: {mode} OK" in out.stdout


def test_lora_with_fsdp_gives_the_update_of_one_process(tiny_dir, tmp_path):
    """LoRA on an FSDP2-sharded policy: the adapters train on 2 ranks as in one process, the reference is the
    base with the adapters off (KL in the loss), and the checkpoint holds the adapter gathered from its shards."""
    case = ["algorithm.preset=grpo", "train.steps=3", "model.lora.rank=8", "model.lora.alpha=16",
            "algorithm.kl.coef=0.05", "optim.lr=3e-2", "checkpoint.every=2"]
    one, two = tmp_path / "one", tmp_path / "two"
    _ok(launch(tiny_dir, one, 1, *case))
    _ok(launch(tiny_dir, two, 2, *case, "train.fsdp=true"))
    assert_same_run(one, two, "lora fsdp")
    shards = sorted((two / "checkpoints" / "step_000003" / "optimizer").glob("*.distcp"))
    assert len(shards) == 2, shards  # sharded: every rank wrote its own part of the adapters' optimizer state
    weights = final_weights(two)
    assert weights and all("lora_" in name for name in weights)
    assert any("lora_B" in name and float(w.abs().max()) > 0 for name, w in weights.items())
