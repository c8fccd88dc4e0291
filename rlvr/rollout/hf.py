"""The "hf" rollout engine: batched sampling with a Hugging Face causal LM, on CPU or GPU.

By default it shares the model object with the trainer (colocated): generation reads the current
weights every call, so `update_weights` with that same object only records the version. An engine
built on its own copy (another module) gets the trainer's weights copied into it, in place, by
`update_weights(model, version)`; a state dict is loaded. The model is put in eval mode for the
duration of a call and restored after.

Samples are generated in chunks of at most `max_batch_size` rows (prompt-major, so the samples of one
prompt usually share a chunk and its prefill). Llama-family models take the fast decoder of
`rlvr.rollout.decoders`; other architectures the generic one (same sampling, same random streams).
Rows that finish are dropped from the batch once at least `compact_fraction` of it has finished, so
the matrix products shrink with the batch (the fast decoder only).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import numpy as np
import torch

from rlvr.models.llama import fast_path_problem
from rlvr.rollout.base import ENGINES, RolloutBatch, RolloutEngine, SamplingParams, state_tensors
from rlvr.rollout.decoders import GenericDecoder, LlamaDecoder, check_decode_attention
from rlvr.rollout.sampling import sample_next, stream_keys, stream_uniforms

DECODERS = ("auto", "fast", "generic")
STOP_WINDOW_SLACK = 8  # extra tokens decoded when looking for stop strings (see _stop_string_hit)


@ENGINES.register("hf")
class HFEngine(RolloutEngine):
    """Batched generation with the model's own modules; see the module docstring.

    Args:
        model: a transformers causal LM (any device and dtype; sampling math runs in float32).
        tokenizer: its tokenizer (eos id, and decoding for stop strings).
        max_batch_size: rows generated together; None: 64 on CPU (past that the step is compute-bound
            and the KV cache only grows), 256 on GPU.
        decoder: "auto" (fast when the architecture allows it), "fast" (error if it cannot) or "generic".
        compact_fraction: drop finished rows once this fraction of the batch has finished (0 < f <= 1).
        weight_major: the fast decoder's decode-step products as (W x^T)^T (rlvr.rollout.decoders.rows_linear);
            None: a float32 CPU model on a CPU without AMX, or a bfloat16 one on a CPU with AMX.
        decode_attention: the fast decoder's decode-step attention, "matmul" or "sdpa"
            (rlvr.rollout.decoders.LlamaDecoder); None: "matmul" for a float32 CPU model, else "sdpa".
    """

    def __init__(self, model, tokenizer, *, max_batch_size: int | None = None, decoder: str = "auto",
                 compact_fraction: float = 0.25, weight_major: bool | None = None,
                 decode_attention: str | None = None):
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; known: {', '.join(DECODERS)}")
        if max_batch_size is not None and (not isinstance(max_batch_size, int) or max_batch_size < 1):
            raise ValueError(f"max_batch_size must be an integer >= 1 or None (got {max_batch_size!r})")
        if not 0 < compact_fraction <= 1:
            raise ValueError(f"compact_fraction must be in (0, 1] (got {compact_fraction!r})")
        self.model, self.tokenizer = model, tokenizer
        self.decoder = decoder
        self.compact_fraction = compact_fraction
        check_decode_attention(decode_attention)  # here too, so that a bad value fails before any generation
        self.weight_major = weight_major
        self.decode_attention = decode_attention
        self._max_batch_size = max_batch_size
        self.record_routes = False
        """Mixture-of-experts models: record the experts every sampled token is routed to (RolloutBatch.routes,
        for routing replay R3)."""

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def max_batch_size(self) -> int:
        if self._max_batch_size is not None:
            return self._max_batch_size
        return 256 if self.device.type == "cuda" else 64

    def update_weights(self, model_or_state_dict: Any, version: int | None = None) -> None:
        """Use these weights from now on; `version` becomes `policy_version` (None keeps it).

        The same model object the engine holds: nothing to copy (generation reads the live parameters
        and keeps no copies). Another module: its weights are copied into the engine's model in place
        (strict: same names and shapes, cast to the engine's dtype). A state dict, or (name, tensor) pairs: loaded
        the same way.
        """
        if model_or_state_dict is not self.model:
            self.model.load_state_dict(state_tensors(model_or_state_dict), strict=True)
        if version is not None:
            self.policy_version = int(version)

    @torch.no_grad()
    def weight_sync_error(self, model: Any) -> float | None:
        """Max |engine weight - trainer weight cast to the engine's dtype| over every tensor of `model` (a module
        or a state dict); None when the engine shares the trainer's model (nothing to compare). 0.0 means the
        copy is exactly in sync."""
        if not isinstance(model, (torch.nn.Module, dict)) or model is self.model:
            return None
        ours = self.model.state_dict()
        worst = 0.0
        for name, tensor in state_tensors(model).items():
            mine = ours.get(name)
            if mine is None or mine.shape != tensor.shape:
                return float("inf")
            worst = max(worst, float((mine - tensor.to(device=mine.device, dtype=mine.dtype)).abs().max()))
        return worst

    @torch.no_grad()
    def logprobs(self, prompt_ids: list[int], response_ids: list[int]) -> list[float]:
        """The engine model's log-probs of `response_ids` after `prompt_ids` (temperature 1, no filter)."""
        if not prompt_ids or not response_ids:
            raise ValueError("logprobs needs a non-empty prompt and response")
        ids = torch.tensor([list(prompt_ids) + list(response_ids)], device=self.device)
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        try:
            logits = self.model(input_ids=ids, use_cache=False).logits[0, len(prompt_ids) - 1 : -1].float()
        finally:
            for module, training in modes:
                module.training = training
        lp = torch.log_softmax(logits, dim=-1).gather(-1, ids[0, len(prompt_ids):, None]).squeeze(-1)
        return lp.tolist()

    # --- generate ---------------------------------------------------------------------------------

    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> RolloutBatch:
        if not isinstance(params, SamplingParams):
            raise TypeError(f"params must be a SamplingParams, not {type(params).__name__}")
        start = time.perf_counter()
        prompts = self._check_prompts(prompt_ids, params)
        n = params.n
        total = len(prompts) * n
        seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
        keys = stream_keys(seed, params.stream_offset + np.arange(total))
        stop_ids = self._stop_token_ids(params)

        responses: list[list[int]] = [[] for _ in range(total)]
        logprobs: list[list[float]] = [[] for _ in range(total)]
        reasons = ["length"] * total
        extra = {"decoder": [], "prefill_s": 0.0, "decode_s": 0.0, "compactions": 0}
        if self.record_routes:
            from rlvr.models.moe import RoutingHooks

            extra["routes"] = [None] * total
            self._hooks = RoutingHooks(self.model)
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        try:
            with torch.inference_mode():
                for lo in range(0, total, self.max_batch_size):
                    samples = list(range(lo, min(total, lo + self.max_batch_size)))
                    self._generate_chunk(prompts, samples, n, keys, params, stop_ids, responses, logprobs, reasons, extra)
        finally:
            for module, training in modes:
                module.training = training

        lengths = [len(r) for r in responses]
        return RolloutBatch(
            prompt_index=[s // n for s in range(total)],
            prompt_ids=[list(prompts[s // n]) for s in range(total)],
            response_ids=responses,
            sampler_logprobs=logprobs,
            finish_reasons=reasons,
            response_lengths=lengths,
            num_generated_tokens=sum(lengths),
            gen_time_s=time.perf_counter() - start,
            extra=extra,
            policy_version=self.policy_version,
            routes=extra.pop("routes", None),
        )

    def _generate_chunk(self, prompts, samples, n, keys, params, stop_ids, responses, logprobs, reasons, extra):
        """Generate the given samples (indices into the prompt-major list), filling the output lists."""
        unique = sorted({s // n for s in samples})
        local = {p: j for j, p in enumerate(unique)}
        row_prompt = [local[s // n] for s in samples]
        chunk_prompts = [prompts[p] for p in unique]
        decoder = self._make_decoder(max(len(p) for p in chunk_prompts) + params.max_new_tokens)
        extra["decoder"].append(type(decoder).__name__)

        t0 = time.perf_counter()
        recording = contextlib.nullcontext([]) if "routes" not in extra else self._hooks.record()
        with recording as calls:
            t1 = self._decode(decoder, chunk_prompts, row_prompt, samples, keys, params, stop_ids, responses, logprobs,
                              reasons, extra, compact="routes" not in extra)
        extra["prefill_s"] += t1 - t0
        extra["decode_s"] += time.perf_counter() - t1
        if "routes" in extra:
            self._keep_routes(calls, chunk_prompts, row_prompt, samples, responses, extra["routes"])

    def _keep_routes(self, calls, chunk_prompts, row_prompt, samples, responses, out) -> None:
        """Each sample's routes from the recorded forwards: the prefill's [rows * P] tokens, then one token per
        row per decode step (step j feeds response token j); the last response token was never fed (-1)."""
        from rlvr.models.moe import NO_ROUTE

        rows = len(samples)
        prefill = calls[0].reshape(rows, -1, *calls[0].shape[1:])
        width = prefill.shape[1]
        for r, s in enumerate(samples):
            prompt_len, n = len(chunk_prompts[row_prompt[r]]), len(responses[s])
            fed = [calls[1 + j][r : r + 1] for j in range(min(n, len(calls) - 1))]
            missing = torch.full((n - len(fed), *prefill.shape[2:]), NO_ROUTE, dtype=prefill.dtype)
            out[s] = torch.cat([prefill[r, width - prompt_len :], *fed, missing]).cpu()

    def _decode(self, decoder, chunk_prompts, row_prompt, samples, keys, params, stop_ids, responses, logprobs,
                reasons, extra, *, compact: bool) -> float:
        """Prefill, then sample token by token until every row stops; returns the time the prefill ended."""
        logits = decoder.prefill(chunk_prompts, row_prompt, params.max_new_tokens)
        t1 = time.perf_counter()
        rows = np.array(samples)  # sample index of each row of the current batch
        alive = np.ones(len(rows), dtype=bool)
        window = max((len(s) for s in params.stop), default=0) + STOP_WINDOW_SLACK
        for t in range(params.max_new_tokens):
            uniforms = torch.from_numpy(stream_uniforms(keys[rows], t))
            tokens, lps = sample_next(logits, uniforms, temperature=params.temperature,
                                      top_k=params.top_k, top_p=params.top_p)
            for r, (s, tok, lp) in enumerate(zip(rows.tolist(), tokens.tolist(), lps.tolist())):
                if not alive[r]:
                    continue
                responses[s].append(tok)
                logprobs[s].append(lp)
                if tok in stop_ids or (params.stop and self._stop_string_hit(responses[s], params.stop, window)):
                    reasons[s] = "stop"
                    alive[r] = False
            if t == params.max_new_tokens - 1 or not alive.any():
                break
            dead = int((~alive).sum())
            if compact and dead and dead >= self.compact_fraction * len(rows):
                keep = np.flatnonzero(alive)
                if decoder.select(torch.from_numpy(keep).to(self.device)):
                    rows, alive, tokens = rows[keep], alive[keep], tokens[torch.from_numpy(keep).to(tokens.device)]
                    extra["compactions"] += 1
            logits = decoder.step(tokens)
        return t1

    def _make_decoder(self, total_len: int):
        if self.decoder == "generic":
            return GenericDecoder(self.model)
        problem = fast_path_problem(self.model, total_len)
        if problem is None:
            return LlamaDecoder(self.model, weight_major=self.weight_major, decode_attention=self.decode_attention)
        if self.decoder == "fast":
            raise ValueError(f"decoder='fast' cannot run this model: {problem}; use decoder='auto' or 'generic'")
        return GenericDecoder(self.model)

    def _stop_string_hit(self, response: list[int], stop: tuple[str, ...], window: int) -> bool:
        """Whether the newest token completed a stop string.

        Only the last `window` tokens are decoded (longest stop string in characters plus slack): a
        string of c characters spans at most c tokens when every token decodes to at least one
        character, so a match that the newest token completes lies inside that window; a match that
        ends earlier would have stopped the response at an earlier step.
        """
        text = self.tokenizer.decode(response[-window:], skip_special_tokens=False)
        return any(s in text for s in stop)

    def _stop_token_ids(self, params: SamplingParams) -> set[int]:
        ids = set(params.stop_token_ids)
        if not params.ignore_eos:
            for source in (self.tokenizer.eos_token_id, getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)):
                if isinstance(source, int):
                    ids.add(source)
                elif source is not None:
                    ids.update(int(i) for i in source)
        return ids

    def _check_prompts(self, prompt_ids, params: SamplingParams) -> list[list[int]]:
        """Validate prompts and apply the length policy; returns plain lists of ints."""
        if isinstance(prompt_ids, torch.Tensor) or not isinstance(prompt_ids, (list, tuple)):
            raise TypeError("prompt_ids must be a list of token-id lists (one per prompt, no padding)")
        config = self.model.config
        vocab = getattr(config, "vocab_size", None)
        context = getattr(config, "max_position_embeddings", None)
        limit, why = None, ""
        if context is not None:
            limit = context - params.max_new_tokens
            why = f"the model's context of {context} tokens minus max_new_tokens={params.max_new_tokens}"
            if limit < 1:
                raise ValueError(
                    f"max_new_tokens={params.max_new_tokens} leaves no room for a prompt in the model's context of "
                    f"{context} tokens; lower max_new_tokens"
                )
        if params.max_prompt_tokens is not None and (limit is None or params.max_prompt_tokens < limit):
            limit, why = params.max_prompt_tokens, f"max_prompt_tokens={params.max_prompt_tokens}"
        out = []
        for i, prompt in enumerate(prompt_ids):
            if isinstance(prompt, torch.Tensor):
                prompt = prompt.tolist()
            prompt = list(prompt)
            if not prompt:
                raise ValueError(f"prompt {i} is empty; every prompt needs at least one token")
            if not all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
                raise TypeError(f"prompt {i} must be a list of int token ids")
            bad = [t for t in prompt if t < 0 or (vocab is not None and t >= vocab)]
            if bad:
                raise ValueError(f"prompt {i} has token ids outside the vocabulary [0, {vocab}): {bad[:5]}")
            if limit is not None and len(prompt) > limit:
                if params.truncate_prompt != "left":
                    raise ValueError(
                        f"prompt {i} has {len(prompt)} tokens, more than the {limit} allowed by {why}; "
                        "shorten it, lower max_new_tokens, or set truncate_prompt='left' to keep its last tokens"
                    )
                prompt = prompt[-limit:]
            out.append(prompt)
        return out


