"""Forward passes for generation: a fast decoder for Llama-family models and a generic fallback.

Both expose the same three calls, used by `rlvr.rollout.hf`:
  `prefill(prompts, row_prompt, max_new_tokens) -> logits [B, V]` for the last prompt position of
  every row (row r answers prompts[row_prompt[r]]); `step(tokens [B]) -> logits [B, V]` after
  appending one token per row; `select(rows)` keeps only those rows (returns False if unsupported).

`LlamaDecoder` (llama, qwen2, qwen3, mistral without sliding window) runs the model's own modules
(embedding, norms, projections, MLPs, rotary table, lm_head) in its own loop, so weights are shared
with the model object and a weight update needs no copy. What it changes against the Hugging Face
forward, and why:
  - a static KV cache [B, kv_heads, P + max_new_tokens, head_dim] per layer, written in place
    (HF's DynamicCache concatenates, copying the whole cache every step);
  - decode attention groups the query heads of one KV head ([B, kv, G, D] @ [B, kv, D, L]) instead of
    materialising repeated keys/values (repeat_kv copies the cache G times per layer per step);
  - each prompt is prefilled once and its KV copied to its n samples, and a prefix common to all the
    prompts of a batch (system message, few-shot examples) is prefilled once for all of them;
  - the rotary cos/sin table is computed once per call, and lm_head runs on the last position only;
  - finished rows can be dropped (`select`), shrinking every later matrix product;
  - in a decode step each projection of the few rows x [B, in] can be computed as (W x^T)^T instead of
    x W^T: the same products, in a shape some BLAS run much faster at small B, and the MLP then stays in
    that layout from its input to its output. Where it is on by default follows measurements
    (benchmarks/NOTES.md, benchmarks/decode_variants.py): float32 on CPUs without AMX (two AMD EPYCs:
    the lm_head at B = 64 from 33 to 69 GFLOP/s, decode 1.2-1.3x), bfloat16 on CPUs with AMX (an AMX
    Xeon: decode of 8 rows 1.14x); not float32 with AMX (that Xeon: 0.84-0.90x) nor bfloat16 without it
    (an AVX512_BF16 EPYC: 0.96x);
  - a decode step's attention in bfloat16 (or float16) runs through `scaled_dot_product_attention` (a
    fused kernel with float32 accumulation), in float32 on the CPU as two grouped matmuls, whichever was
    measured faster (the AMX Xeon: 8 rows x 512 tokens in bfloat16 1.28x faster fused; float32 matmuls
    as fast or faster).
Left padding: every row writes its new token at the same cache column; a row's padding columns get
-inf in an additive mask, and positions count from the row's first real token (as HF's position_ids
from the attention mask do), so a sequence's result does not depend on the other prompts' lengths.

`GenericDecoder` calls `model(...)` with a DynamicCache, an attention mask and position ids; slower, but
works for any causal LM that transformers can run with a cache.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlvr.models.llama import MIN_SHARED_PREFIX, apply_module, common_prefix_len, qkv, rotary_table

PREFILL_TOKENS = 8192  # prompt tokens (padding included) per prefill forward
DECODE_ATTENTION = ("matmul", "sdpa")


def check_decode_attention(value: str | None) -> None:
    """Raise ValueError unless `value` is one of DECODE_ATTENTION or None (the default for the model's dtype)."""
    if value not in (None, *DECODE_ATTENTION):
        raise ValueError(f"decode_attention must be one of {', '.join(DECODE_ATTENTION)} or None (got {value!r})")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (/proc/cpuinfo; empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    return frozenset(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))


def rows_linear(module: nn.Module, x: Tensor) -> Tensor:
    """module(x) for a plain nn.Linear as (W x^T)^T, a [B, out] view of a [out, B] product (any other module,
    e.g. a LoRA wrapper or a sharded weight: module(x))."""
    if type(module) is not nn.Linear or type(module.weight.data) is not torch.Tensor:
        return module(x)
    out = torch.mm(module.weight, x.t()).t()
    return out if module.bias is None else out + module.bias


class LlamaDecoder:
    """Static-cache decoding with the model's own modules (see the module docstring).

    weight_major: compute a decode step's projections as (W x^T)^T (`rows_linear`); None: where it was
    measured to pay, a CPU model in float32 on a CPU without AMX, or in bfloat16 on one with AMX.
    decode_attention: a decode step's attention as "matmul" (scores and output as two grouped matmuls, the
    probabilities rounded to the cache's dtype) or "sdpa" (`scaled_dot_product_attention`); None: "matmul"
    for a float32 CPU model, else "sdpa".
    """

    def __init__(self, model, *, weight_major: bool | None = None, decode_attention: str | None = None):
        self.model = model
        base = model.model
        self.embed, self.layers, self.norm = base.embed_tokens, list(base.layers), base.norm
        self.lm_head = model.lm_head
        attn = self.layers[0].self_attn
        self.head_dim = attn.head_dim
        self.num_heads = model.config.num_attention_heads
        self.num_kv = model.config.num_key_value_heads
        self.groups = self.num_heads // self.num_kv
        self.scaling = attn.scaling
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        check_decode_attention(decode_attention)
        on_cpu, fp32 = self.device.type == "cpu", self.dtype == torch.float32
        if weight_major is None:
            amx = "amx_bf16" in cpu_flags()
            weight_major = on_cpu and (fp32 and not amx or self.dtype == torch.bfloat16 and amx)
        self.linear = rows_linear if weight_major else apply_module
        if decode_attention is None:
            decode_attention = "matmul" if on_cpu and fp32 else "sdpa"
        self.sdpa_decode = decode_attention == "sdpa"
        mlp = self.layers[0].mlp
        self.split_mlp = all(hasattr(mlp, a) for a in ("gate_proj", "up_proj", "down_proj", "act_fn"))

    def _qkv(self, layer, h: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return qkv(layer, h, cos, sin, self.num_heads, self.num_kv)

    @torch.inference_mode()
    def prefill(self, prompts: list[list[int]], row_prompt: list[int], max_new_tokens: int) -> Tensor:
        dev = self.device
        lens = [len(p) for p in prompts]
        p_len = max(lens)
        s_len = p_len + max_new_tokens
        b = len(row_prompt)
        self.cos, self.sin = rotary_table(self.model, s_len)  # [max_pos, D]
        shape = (b, self.num_kv, s_len, self.head_dim)
        # Zeros, not empty: padding columns are masked with -inf, but a NaN left in freed memory would
        # still poison q.k (NaN + -inf) and probs @ v (0 * NaN).
        self.k_cache = [torch.zeros(shape, dtype=self.dtype, device=dev) for _ in self.layers]
        self.v_cache = [torch.zeros(shape, dtype=self.dtype, device=dev) for _ in self.layers]
        rows = torch.tensor(row_prompt, dtype=torch.long, device=dev)
        lens_t = torch.tensor(lens, device=dev)
        self.col = p_len
        self.positions = lens_t[rows].clone()  # position of the next token of each row
        self.mask = torch.zeros((b, s_len), dtype=self.dtype, device=dev)
        self.mask[:, :p_len].masked_fill_(torch.arange(p_len, device=dev)[None] < (p_len - lens_t[rows])[:, None], float("-inf"))

        # A prefix shared by every prompt (a system message, few-shot examples) is computed once and
        # its KV copied to each row; at least one token per prompt stays to produce its logits.
        shared = min(common_prefix_len(prompts), min(lens) - 1) if len(prompts) > 1 else 0
        prefix = None
        if shared >= MIN_SHARED_PREFIX:
            prefix = self._prefill_prefix(prompts[0][:shared])
        else:
            shared = 0
        suffixes = [p[shared:] for p in prompts]
        logits = None
        # Groups of prompts, each padded to its own longest: bounds activation memory and wastes less
        # compute on padding than one [U, P] batch when lengths vary.
        start = 0
        while start < len(prompts):
            end = start + 1
            while end < len(prompts) and (end + 1 - start) * max(map(len, suffixes[start : end + 1])) <= PREFILL_TOKENS:
                end += 1
            in_group = ((rows >= start) & (rows < end)).nonzero().squeeze(1)
            group_logits = self._prefill_group(suffixes[start:end], in_group, rows[in_group] - start, p_len, prefix)
            if logits is None:
                logits = torch.empty((b, group_logits.shape[-1]), dtype=torch.float32, device=dev)
            logits[in_group] = group_logits.float()
            start = end
        if prefix is not None:
            # After the groups: their left padding columns overlap the prefix columns of shorter prompts.
            starts = (p_len - lens_t[rows]).tolist()
            for first in set(starts):
                same = torch.tensor([r for r, s in enumerate(starts) if s == first], device=dev)
                for i, (k, v) in enumerate(prefix):
                    self.k_cache[i][same, :, first : first + shared] = k
                    self.v_cache[i][same, :, first : first + shared] = v
        return logits

    def _prefill_prefix(self, prefix: list[int]) -> list[tuple[Tensor, Tensor]]:
        """KV [1, kv, L, D] per layer of the shared prefix (positions 0..L-1)."""
        dev, n = self.device, len(prefix)
        allowed = torch.ones((n, n), dtype=torch.bool, device=dev).tril()[None, None]
        x = self.embed(torch.tensor([prefix], device=dev))
        cos, sin = self.cos[:n][None], self.sin[:n][None]
        kvs = []
        for i, layer in enumerate(self.layers):
            q, k, v = self._qkv(layer, layer.input_layernorm(x), cos, sin)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [1, heads, L, D]
            kvs.append((k, v))
            if i == len(self.layers) - 1:
                break  # the last layer's output is not needed: only its keys and values are
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=self.scaling, enable_gqa=True)
            x = x + layer.self_attn.o_proj(a.transpose(1, 2).reshape(1, n, -1))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return kvs

    def _prefill_group(self, prompts: list[list[int]], cache_rows: Tensor, row_prompt: Tensor, p_len: int,
                       prefix: list[tuple[Tensor, Tensor]] | None) -> Tensor:
        """Run prompts (after the shared prefix, if any) left-padded to their own longest (g); write their
        KV into cache columns [p_len - g, p_len) of `cache_rows` (row r gets prompt row_prompt[r]); logits of
        each row."""
        dev = self.device
        u, lens = len(prompts), torch.tensor([len(p) for p in prompts], device=dev)
        g = int(lens.max())
        shared = 0 if prefix is None else prefix[0][0].shape[2]
        ids = torch.zeros((u, g), dtype=torch.long, device=dev)
        for i, prompt in enumerate(prompts):
            ids[i, g - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        cols = torch.arange(g, device=dev)
        pad = cols[None, :] < (g - lens)[:, None]  # [U, g] True on left padding
        positions = shared + (cols[None, :] - (g - lens)[:, None]).clamp(min=0)  # [U, g]
        # Causal, and no real query sees padding; a padding query sees itself so its softmax is finite.
        causal = torch.ones((g, g), dtype=torch.bool, device=dev).tril()
        allowed = ((causal[None] & ~pad[:, None, :]) | torch.eye(g, dtype=torch.bool, device=dev)[None])[:, None]
        if shared:  # every query also sees the whole shared prefix
            allowed = torch.cat((torch.ones((u, 1, g, shared), dtype=torch.bool, device=dev), allowed), dim=-1)

        x = self.embed(ids)  # [U, g, H]
        cos, sin = self.cos[positions], self.sin[positions]
        for i, layer in enumerate(self.layers):
            q, k, v = self._qkv(layer, layer.input_layernorm(x), cos, sin)  # [U, g, heads, D]
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            self.k_cache[i][cache_rows, :, p_len - g : p_len] = k[row_prompt]
            self.v_cache[i][cache_rows, :, p_len - g : p_len] = v[row_prompt]
            if shared:
                pk, pv = prefix[i]
                k = torch.cat((pk.expand(u, -1, -1, -1), k), dim=2)
                v = torch.cat((pv.expand(u, -1, -1, -1), v), dim=2)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=self.scaling, enable_gqa=True)
            x = x + layer.self_attn.o_proj(a.transpose(1, 2).reshape(u, g, -1))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.lm_head(self.norm(x[:, -1]))[row_prompt]  # left padding: the last column is real

    def _mlp(self, mlp: nn.Module, x: Tensor) -> Tensor:
        if not self.split_mlp:
            return mlp(x)
        lin = self.linear
        return lin(mlp.down_proj, mlp.act_fn(lin(mlp.gate_proj, x)) * lin(mlp.up_proj, x))

    @torch.inference_mode()
    def step(self, tokens: Tensor) -> Tensor:
        b, c = tokens.shape[0], self.col
        x = self.embed(tokens)  # [B, H]
        cos, sin = self.cos[self.positions], self.sin[self.positions]  # [B, D]
        mask = self.mask[:, None, None, : c + 1]  # [B, 1, 1, c+1]
        lin = self.linear
        for i, layer in enumerate(self.layers):
            q, k, v = qkv(layer, layer.input_layernorm(x), cos, sin, self.num_heads, self.num_kv, lin)
            kc, vc = self.k_cache[i], self.v_cache[i]
            kc[:, :, c] = k
            vc[:, :, c] = v
            if self.sdpa_decode:  # query head h uses kv head h // G (enable_gqa)
                # q contiguous: the weight-major projections leave it transposed, which the fused kernel runs
                # several times slower (benchmarks/decode_variants.py)
                q = q.reshape(b, self.num_heads, 1, self.head_dim).contiguous()
                a = F.scaled_dot_product_attention(q, kc[:, :, : c + 1], vc[:, :, : c + 1], attn_mask=mask,
                                                   scale=self.scaling, enable_gqa=True)
            else:
                q = q.view(b, self.num_kv, self.groups, self.head_dim)  # query head h uses kv head h // G
                scores = torch.matmul(q, kc[:, :, : c + 1].transpose(-1, -2)).mul_(self.scaling).add_(mask)
                probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(vc.dtype)
                a = torch.matmul(probs, vc[:, :, : c + 1])  # [B, kv, G, D]
            x = x + lin(layer.self_attn.o_proj, a.reshape(b, -1))
            x = x + self._mlp(layer.mlp, layer.post_attention_layernorm(x))
        self.col += 1
        self.positions += 1
        return lin(self.lm_head, self.norm(x)).float().contiguous()

    def select(self, rows: Tensor) -> bool:
        self.k_cache = [self._keep(k, rows) for k in self.k_cache]
        self.v_cache = [self._keep(v, rows) for v in self.v_cache]
        self.positions, self.mask = self.positions[rows], self.mask[rows]
        return True

    def _keep(self, cache: Tensor, rows: Tensor) -> Tensor:
        """The given rows of a cache, copying only the columns written so far; the later columns are
        left uninitialised because each is written (step) before any attention reads it."""
        out = torch.empty((len(rows), *cache.shape[1:]), dtype=cache.dtype, device=cache.device)
        out[:, :, : self.col] = cache[:, :, : self.col].index_select(0, rows)
        return out


class GenericDecoder:
    """`model(...)` with a DynamicCache, for architectures the fast decoder does not cover."""

    def __init__(self, model):
        self.model = model
        params = inspect.signature(model.forward).parameters
        self.takes_positions = "position_ids" in params
        self.takes_logits_to_keep = "logits_to_keep" in params
        # transformers >= 5.2x names the cache argument and output `cache` (`past_key_values` is deprecated)
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        self.device = next(model.parameters()).device

    def _forward(self, ids: Tensor, positions: Tensor) -> Tensor:
        kwargs = {"attention_mask": self.attention_mask, self.cache_arg: self.cache, "use_cache": True}
        if self.takes_positions:
            kwargs["position_ids"] = positions
        if self.takes_logits_to_keep:
            kwargs["logits_to_keep"] = 1
        out = self.model(input_ids=ids, **kwargs)
        self.cache = getattr(out, self.cache_arg)
        return out.logits[:, -1].float()

    @torch.inference_mode()
    def prefill(self, prompts: list[list[int]], row_prompt: list[int], max_new_tokens: int) -> Tensor:
        from transformers import DynamicCache

        rows = [prompts[i] for i in row_prompt]
        p_len = max(len(p) for p in rows)
        ids = torch.zeros((len(rows), p_len), dtype=torch.long, device=self.device)
        self.attention_mask = torch.zeros_like(ids)
        for r, prompt in enumerate(rows):
            ids[r, p_len - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            self.attention_mask[r, p_len - len(prompt) :] = 1
        positions = (self.attention_mask.cumsum(-1) - 1).clamp(min=0)
        self.positions = positions[:, -1] + 1
        self.cache = DynamicCache(config=self.model.config)
        return self._forward(ids, positions)

    @torch.inference_mode()
    def step(self, tokens: Tensor) -> Tensor:
        self.attention_mask = F.pad(self.attention_mask, (0, 1), value=1)
        logits = self._forward(tokens[:, None], self.positions[:, None])
        self.positions = self.positions + 1
        return logits

    def select(self, rows: Tensor) -> bool:
        return False
