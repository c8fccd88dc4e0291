"""GPU figures of the 1-GPU path: training tokens/s and MFU of the update, generation tokens/s of
the hf engine, peak GPU memory. One short script for a lent GPU machine (no internet, no pretrained
weights): the models are built from real configurations with random weights.

    python benchmarks/gpu_figures.py --json gpu.json                      # on the GPU machine
    python benchmarks/gpu_figures.py --device cpu --models tiny --steps 2  # a check of the script on a CPU

Per model (SmolLM2-135M's configuration, Qwen2.5-0.5B's and Qwen2.5-1.5B's; `tiny` for a CPU check):
- The update, on the path `torchrun` + `train.fsdp=true` runs: a process group of world size 1 (NCCL on a
  GPU, gloo on a CPU), the policy sharded by FSDP2 per decoder layer (`fully_shard_model`, what
  Topology.shard_module does on N ranks; it is a no-op for one process) with bfloat16 parameters and float32
  gradient reduction (MixedPrecisionPolicy), float32 master weights in AdamW; rlvr's packed
  `response_logprobs` (every group's prompt once), the GRPO objective (`rl_objective`, ppo_clip,
  seq_mean_token_mean), backward, gradient clipping and the optimizer step, on `--prompts` x `--group`
  sequences of `--prompt-len` + `--response-len` random tokens. Trained tokens/s counts the real prompt
  (once per sample, as a padded trainer would) and response tokens; MFU = (6 x parameters + 12 x layers
  x hidden x sequence length) FLOPs per trained token x tokens/s / `--peak-tflops` (989: H100/H200 SXM
  dense bfloat16), the convention of verl's reported MFU (0.31-0.40 on H-class GPUs).
- Generation: rlvr's hf engine on the bfloat16 model, `--gen-batch` rows of the same prompts, `--gen-tokens`
  forced new tokens, temperature 1: tokens/s (prefill included).
- Peak GPU memory (torch.cuda.max_memory_allocated) of each phase.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # rlvr from this checkout, installed or not

CONFIGS = {
    "smollm2-135m": dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192,
                         rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True),
    "qwen2.5-0.5b": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                         max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0,
                         tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(model_type="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                         max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0,
                         tie_word_embeddings=True),
    "tiny": dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, vocab_size=512, max_position_embeddings=1024, rms_norm_eps=1e-5,
                 tie_word_embeddings=True),
}


def build(name: str, device: torch.device, dtype: torch.dtype):
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = dict(CONFIGS[name])
    config = AutoConfig.for_model(spec.pop("model_type"), **spec)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def batch(vocab: int, prompts: int, group: int, prompt_len: int, response_len: int, device, seed: int):
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(3, vocab, (prompts, prompt_len), generator=g).repeat_interleave(group, 0)
    response = torch.randint(3, vocab, (prompts * group, response_len), generator=g)
    ids = torch.cat((prompt, response), 1).to(device)
    return ids, torch.ones_like(ids)


def update_figures(name: str, args, device: torch.device) -> dict:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy

    from rlvr.core.objective import rl_objective
    from rlvr.models.logprobs import response_logprobs
    from rlvr.train.distributed import fully_shard_model
    from rlvr.train.optim import adamw

    reset_peak(device)
    model = build(name, device, torch.float32)  # float32 master weights; FSDP2 computes in bfloat16
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    fully_shard_model(model, mesh, reshard="layer", mp_policy=policy)  # what train.fsdp=true does on N ranks
    optimizer = adamw(model.parameters(), lr=1e-6, weight_decay=0.0)
    n = args.prompts * args.group
    times = []
    for step in range(args.steps):
        ids, mask = batch(cfg.vocab_size, args.prompts, args.group, args.prompt_len, args.response_len, device, step)
        advantages = torch.randn(n, 1, device=device).expand(n, args.response_len)  # one per sequence, per token
        loss_mask = torch.ones((n, args.response_len), dtype=torch.bool, device=device)
        sync(device)
        t0 = time.perf_counter()
        for lo in range(0, n, args.micro_batch):  # gradient accumulation over micro-batches
            lp, _ = response_logprobs(model, ids[lo : lo + args.micro_batch], mask[lo : lo + args.micro_batch],
                                      args.response_len, packed=True, checkpoint_layers=args.checkpoint)
            loss, _ = rl_objective(lp, loss_mask=loss_mask[lo : lo + args.micro_batch],
                                   advantages=advantages[lo : lo + args.micro_batch], old_logprobs=lp.detach(),
                                   loss="ppo_clip", aggregation="seq_mean_token_mean", num_sequences=n,
                                   num_tokens=loss_mask.sum())
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        times.append(time.perf_counter() - t0)
    timed = times[1:] or times
    step_s = sorted(timed)[len(timed) // 2]
    seq = args.prompt_len + args.response_len
    tokens = n * seq
    flops_per_token = 6 * params + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq
    out = {"params": params, "step_s": step_s, "steps_s": times, "trained_tokens": tokens,
           "tokens_per_s": tokens / step_s, "peak_gib": peak_gib(device)}
    out["mfu"] = flops_per_token * out["tokens_per_s"] / (args.peak_tflops * 1e12)
    del model, optimizer
    return out


def generation_figures(name: str, args, device: torch.device) -> dict:
    from rlvr.rollout import SamplingParams
    from rlvr.rollout.hf import HFEngine

    reset_peak(device)
    model = build(name, device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    tokenizer = SimpleNamespace(eos_token_id=None)  # forced length: no stop token is looked up
    engine = HFEngine(model, tokenizer, max_batch_size=args.gen_batch)
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(3, model.config.vocab_size, (args.gen_batch // args.group, args.prompt_len),
                            generator=g).tolist()
    params = SamplingParams(n=args.group, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=args.gen_tokens,
                            ignore_eos=True, seed=0)
    engine.generate(prompts, SamplingParams(n=1, max_new_tokens=4, ignore_eos=True, seed=0))  # warm-up
    sync(device)
    t0 = time.perf_counter()
    out = engine.generate(prompts, params)
    sync(device)
    wall = time.perf_counter() - t0
    result = {"rows": len(out.response_ids), "tokens": out.num_generated_tokens, "wall_s": wall,
              "tokens_per_s": out.num_generated_tokens / wall, "prefill_s": out.extra.get("prefill_s"),
              "decoder": out.extra.get("decoder"), "peak_gib": peak_gib(device)}
    del model, engine
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "qwen2.5-0.5b", "qwen2.5-1.5b"],
                    choices=sorted(CONFIGS))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=4, help="update steps per model (the first is warm-up)")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--response-len", type=int, default=768)
    ap.add_argument("--micro-batch", type=int, default=16, help="sequences per forward/backward")
    ap.add_argument("--checkpoint", action="store_true", help="recompute each layer in the backward pass")
    ap.add_argument("--gen-batch", type=int, default=256)
    ap.add_argument("--gen-tokens", type=int, default=256)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bfloat16 peak")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    import torch.distributed as dist

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29531")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
    if device.type == "cuda":
        torch.cuda.set_device(0)
        torch.backends.cuda.matmul.allow_tf32 = True
    report = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "torch": torch.__version__,
              "args": vars(args), "models": {}}
    for name in args.models:
        fig = {"update": update_figures(name, args, device), "generation": generation_figures(name, args, device)}
        report["models"][name] = fig
        u, g = fig["update"], fig["generation"]
        print(f"{name}: {u['params'] / 1e6:.0f}M params; update {u['tokens_per_s']:.0f} trained tokens/s, MFU "
              f"{u['mfu']:.2f}, peak {u['peak_gib']} GiB; generation {g['tokens_per_s']:.0f} tokens/s at batch "
              f"{g['rows']}, peak {g['peak_gib']} GiB", flush=True)
    dist.destroy_process_group()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
