"""Llama-family forward passes written against the model's own modules, shared by generation and training.

Models whose decoder layers are Llama-like (llama, qwen2 with q/k/v biases, qwen3 with q/k norms, mistral
without a sliding window) are run here layer by layer with the model's own embedding, norms,
projections, MLPs, rotary table and output projection: the weights are the model's, so an optimizer
step needs no copy. The rollout decoder (`rlvr.rollout.decoders.LlamaDecoder`) and the packed training
forward below use these helpers.

`predicting_hidden_packed` is the training-side forward of `rlvr.models.response_logprobs`. For a batch
laid out as everywhere in rlvr (prompts left-padded to P, responses right-padded to T) it computes
the same function as the Hugging Face forward, with less work:
  - each distinct prompt runs once, however many rows (samples of a group) share it: its keys and
    values are indexed out to those rows, so autograd sums their gradients into the one prompt pass;
    and a prefix common to all the prompts (a system message) runs once for all of them;
  - response tokens run packed, [M, H] with M the real tokens: projections, MLPs and norms never see
    right padding; only the attention works on padded views, and the responses' attention runs in up to
    four buckets of rows of similar length, each padded to its own longest (`length_buckets`), since a
    masked flash attention computes the whole padded rectangle of queries by keys;
  - the last real token of each response is not run at all: it predicts nothing that is scored, and
    no earlier token attends to it.
For the GRPO benchmark batch (4 prompts x 4 samples, 44-token prompts sharing a system message,
responses of 39 tokens on average padded to 64) this is ~700 token positions instead of 1728. All
three kinds of token (shared prefix, prompt suffixes, responses) run as one packed [M, H] tensor
through the per-token work, so each weight takes one matrix product per layer. The result equals the padded forward
up to float rounding (tests compare values and gradients).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

FAST_MODEL_TYPES = ("llama", "qwen2", "qwen3", "mistral")
FAST_ROPE_TYPES = ("default", "linear", "llama3", "yarn")  # the others depend on the sequence length
MIN_SHARED_PREFIX = 8  # shorter prefixes common to all prompts are not worth a separate pass
MAX_LENGTH_BUCKETS = 4  # response attention runs in up to this many groups of rows of similar length


def fast_path_problem(model: nn.Module, total_len: int) -> str | None:
    """Why the Llama fast paths cannot run `model` for sequences of `total_len` tokens; None when they can."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in FAST_MODEL_TYPES:
        return f"model_type {model_type!r} is not one of {', '.join(FAST_MODEL_TYPES)}"
    base = getattr(model, "model", None)
    for name in ("embed_tokens", "layers", "norm", "rotary_emb"):
        if not hasattr(base, name):
            return f"model.model has no {name}"
    if not hasattr(model, "lm_head"):
        return "model has no lm_head"
    for layer in base.layers:
        attn = getattr(layer, "self_attn", None)
        if not all(hasattr(attn, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "scaling")):
            return "a decoder layer's self_attn is not Llama-like"
        if not all(hasattr(layer, m) for m in ("input_layernorm", "post_attention_layernorm", "mlp")):
            return "a decoder layer is not Llama-like"
    rope_type = getattr(base.rotary_emb, "rope_type", "default")
    if rope_type not in FAST_ROPE_TYPES:
        return f"rope type {rope_type!r} is not one of {', '.join(FAST_ROPE_TYPES)}"
    layer_types = getattr(config, "layer_types", None)
    window = getattr(config, "sliding_window", None)
    if layer_types is not None and any(t != "full_attention" for t in layer_types):
        return "the model has sliding-window layers"
    if layer_types is None and window is not None and total_len > window:
        return f"sequences of {total_len} tokens exceed the sliding window ({window})"
    return None


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary embedding, HF's rotate_half convention: x * cos + [-x2, x1] * sin."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def rotary_table(model: nn.Module, length: int) -> tuple[Tensor, Tensor]:
    """cos, sin [length, head_dim] for positions 0 .. length-1, from the model's own rotary module."""
    p = next(model.parameters())
    positions = torch.arange(length, device=p.device)[None]
    cos, sin = model.model.rotary_emb(torch.empty(0, device=p.device, dtype=p.dtype), positions)
    return cos[0], sin[0]


def apply_module(module: nn.Module, x: Tensor) -> Tensor:
    """module(x): the plain way to apply a projection (`qkv`'s default `linear`)."""
    return module(x)


def qkv(layer: nn.Module, h: Tensor, cos: Tensor, sin: Tensor, num_heads: int, num_kv: int,
        linear=apply_module) -> tuple[Tensor, Tensor, Tensor]:
    """q [.., heads, D], k and v [.., kv_heads, D] for hidden states h [.., H], rotary applied
    (cos, sin broadcast against [.., D]). linear(module, x): how a projection is applied (default module(x))."""
    attn = layer.self_attn
    lead, d = h.shape[:-1], attn.head_dim
    q = linear(attn.q_proj, h).view(*lead, num_heads, d)
    k = linear(attn.k_proj, h).view(*lead, num_kv, d)
    v = linear(attn.v_proj, h).view(*lead, num_kv, d)
    if hasattr(attn, "q_norm"):  # qwen3: RMSNorm over each head before rotary
        q, k = attn.q_norm(q), attn.k_norm(k)
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)  # broadcast over heads
    return rotate(q, cos, sin), rotate(k, cos, sin), v


def through_unit(module, fn, *args, **kwargs):
    """fn(*args, **kwargs), between `module`'s FSDP2 forward hooks when it is a unit sharded per layer
    (rlvr.train.distributed.Topology.shard_module, reshard="layer": its parameters are gathered for fn and
    again for fn's backward, and its gradients reduced then); a plain call otherwise."""
    apply = getattr(module, "rlvr_apply", None)
    return fn(*args, **kwargs) if apply is None else apply(fn, *args, **kwargs)


def packed_path_problem(model: nn.Module, attention_mask: Tensor, num_response_tokens: int) -> str | None:
    """Why `predicting_hidden_packed` cannot run this batch; None when it can."""
    problem = fast_path_problem(model, attention_mask.shape[1])
    if problem is not None:
        return problem
    if model.training and float(getattr(model.config, "attention_dropout", 0.0) or 0.0) > 0:
        return "attention dropout is on"
    if model.training and getattr(model.model, "gradient_checkpointing", False):
        return "the model uses Hugging Face gradient checkpointing"
    prompt = attention_mask[:, : attention_mask.shape[1] - num_response_tokens]
    if (prompt[:, 1:] < prompt[:, :-1]).any():
        return "a prompt is not left-padded (its attention_mask has a 0 after a 1)"
    return None


def predicting_hidden_packed(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, num_response_tokens: int,
                             *, checkpoint_layers: bool = False) -> Tensor:
    """Final hidden states [M, H] (after the last norm) that predict the real response tokens, in the
    row-major order of `attention_mask[:, P:].bool()` (M = its sum): row n's response token t is
    predicted by the prompt's last hidden state (t = 0) or by the state at response token t - 1.

    Requires the layout of `response_logprobs` (validated there) with left-padded prompts, and a model
    for which `packed_path_problem` is None. Differentiable in the model's parameters.
    checkpoint_layers: activation checkpointing per decoder layer (with gradient enabled): the backward
    pass keeps each layer's input only and recomputes the layer, about one more forward for much less memory.
    """
    config = model.config
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    base = model.model
    layers = list(base.layers)
    scaling = layers[0].self_attn.scaling
    n, length = input_ids.shape
    T = num_response_tokens
    P = length - T
    dev = input_ids.device

    # Distinct prompts (ids and mask), trimmed to their own longest.
    prompt_mask = attention_mask[:, :P].long()
    key = torch.cat((input_ids[:, :P] * prompt_mask, prompt_mask), dim=1)
    unique, inverse = torch.unique(key, dim=0, return_inverse=True)
    u_mask = unique[:, P:].bool()
    first = int(u_mask.any(0).long().argmax())
    u_ids, u_mask = unique[:, first:P], u_mask[:, first:]
    prompt_len = u_mask.sum(1)  # [U]
    # A prefix common to all distinct prompts (a system message) runs once; each prompt keeps at least
    # its last token, whose state predicts the first response token.
    lens = prompt_len.tolist()
    s_len = common_prefix_len([u_ids[u, u_ids.shape[1] - n_u :].tolist() for u, n_u in enumerate(lens)])
    s_len = min(s_len, min(lens) - 1) if len(lens) > 1 else 0
    if s_len < MIN_SHARED_PREFIX:
        s_len = 0
    pu = u_ids.shape[1] - s_len
    s_ids = u_ids[:1, u_ids.shape[1] - lens[0] : u_ids.shape[1] - lens[0] + s_len]  # [1, S]
    u_ids = u_ids[:, s_len:]  # each prompt's suffix ends at the last column, as the whole prompt did
    u_mask = torch.arange(pu, device=dev)[None] >= (pu - (prompt_len - s_len))[:, None]  # [U, Pu - S]

    # Response tokens that are run: all real ones but each row's last; columns 0 .. T' - 1.
    resp_len = attention_mask[:, P:].long().sum(1)  # [N]; real tokens are a prefix (validated by the caller)
    t_in = max(int(resp_len.max()) - 1, 0)
    cols = torch.arange(t_in, device=dev)
    run = cols[None, :] < (resp_len - 1)[:, None]  # [N, T']

    # Response attention runs per bucket of rows of similar length, each padded to its own longest (a flash
    # attention with a mask computes the whole padded rectangle): response tokens are packed bucket by bucket.
    # buckets: [(rows, T'_b)]
    buckets = length_buckets((resp_len - 1).clamp(min=0).tolist(), s_len + u_mask.shape[1], MAX_LENGTH_BUCKETS)
    order = torch.tensor([r for rows, _ in buckets for r in rows], dtype=torch.long, device=dev)  # [N]
    run_o = run[order]  # [N, T'] in bucket order
    # each packed response token's flat position in the row-major [N * T'] layout
    r_flat = (order[:, None] * t_in + cols[None, :])[run_o]  # [M_r]

    u = len(lens)
    p_run = u_mask.reshape(-1).nonzero().squeeze(1)  # flat positions of the real suffix tokens in [U * (Pu - S)]
    m_s, m_p = s_len, len(p_run)

    # All tokens of the three levels (shared prefix, prompt suffixes, responses) go through the per-token
    # work (norms, projections, MLPs) as one packed [M, H] tensor: one matrix product per weight per
    # layer, forward and backward. Only attention looks at each level apart.
    cos_t, sin_t = rotary_table(model, int(prompt_len.max()) + t_in + 1)
    p_pos = s_len + (u_mask.long().cumsum(1) - 1).clamp(min=0)  # [U, Pu - S]
    r_pos = (prompt_len[inverse][order][:, None] + cols[None, :])[run_o]  # [M_r]
    pos = torch.cat((torch.arange(s_len, device=dev), p_pos.reshape(-1)[p_run], r_pos))
    cos, sin = cos_t[pos], sin_t[pos]
    tokens = torch.cat((s_ids.reshape(-1), u_ids.reshape(-1)[p_run], input_ids[order, P : P + t_in][run_o]))

    def tril(size: int) -> Tensor:
        return torch.ones((size, size), dtype=torch.bool, device=dev).tril()

    # Prompt attention: the shared prefix, then causal over its own real tokens; a padding query also
    # sees itself so that its softmax is finite.
    p_allowed = torch.cat((
        torch.ones((u, pu, s_len), dtype=torch.bool, device=dev),
        (tril(pu)[None] & u_mask[:, None, :]) | torch.eye(pu, dtype=torch.bool, device=dev),
    ), dim=2)[:, None]  # [U, 1, Pu - S, Pu]
    # Response attention, per bucket: the prefix and the row's real prompt tokens, then causal over the run
    # response tokens. A padding query (discarded) sees the prompt, so its softmax is finite too.
    r_parts = []  # per bucket: packed slice, its rows' prompts, flat positions in [rows * T'_b], allowed mask
    begin, first_row = 0, 0
    for rows, t_b in buckets:
        n_b = len(rows)
        run_b = run_o[first_row : first_row + n_b, :t_b]
        count = int(run_b.sum())
        prompts_b = inverse[order[first_row : first_row + n_b]]
        allowed_b = torch.cat((
            torch.ones((n_b, t_b, s_len), dtype=torch.bool, device=dev),
            u_mask[prompts_b][:, None, :].expand(n_b, t_b, pu),
            tril(t_b)[None].expand(n_b, t_b, t_b),
        ), dim=2)[:, None]  # [N_b, 1, T'_b, S + Pu + T'_b]
        if count:
            r_parts.append((slice(begin, begin + count), prompts_b, run_b.reshape(-1).nonzero().squeeze(1), allowed_b))
        begin, first_row = begin + count, first_row + n_b

    def attend(q: Tensor, ks: list[Tensor], vs: list[Tensor], allowed: Tensor) -> Tensor:
        k, v = (torch.cat(z, dim=2) if len(z) > 1 else z[0] for z in (ks, vs))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scaling, enable_gqa=True)

    def expand(z: Tensor, rows: int) -> list[Tensor]:
        return [z.expand(rows, -1, -1, -1)] if s_len else []

    def decoder_layer(x: Tensor, layer: nn.Module) -> Tensor:
        q, k, v = qkv(layer, layer.input_layernorm(x), cos, sin, heads, kv)  # [M, heads | kv, D]
        # shared prefix: [1, heads | kv, S, D], causal
        q_s, k_s, v_s = (z[:m_s].transpose(0, 1)[None] for z in (q, k, v))
        # prompt suffixes: [U, heads | kv, Pu - S, D] with zeros on padding
        q_p, k_p, v_p = (_unpack(z[m_s : m_s + m_p], p_run, u, pu).transpose(1, 2) for z in (q, k, v))
        outs = []
        if s_len:
            outs.append(attend(q_s, [k_s], [v_s], tril(s_len))[0].transpose(0, 1))  # [S, heads, D]
        a = attend(q_p, expand(k_s, u) + [k_p], expand(v_s, u) + [v_p], p_allowed)
        outs.append(a.transpose(1, 2).reshape(u * pu, heads, -1)[p_run])
        for packed, prompts_b, run_idx_b, allowed_b in r_parts:
            n_b, t_b = allowed_b.shape[0], allowed_b.shape[2]
            q_r, k_r, v_r = (_unpack(z[m_s + m_p :][packed], run_idx_b, n_b, t_b).transpose(1, 2) for z in (q, k, v))
            # index_select, not k_p[prompts_b]: the backward of advanced indexing with repeated indices is
            # index_put(accumulate=True), which on CPU with more than one thread adds with unordered float
            # atomics (gradients differing run to run in the last bits, then diverging runs); the backward
            # of index_select (index_add) sums in index order. tests/models/test_determinism.py guards it.
            k_pr, v_pr = k_p.index_select(0, prompts_b), v_p.index_select(0, prompts_b)
            a = attend(q_r, expand(k_s, n_b) + [k_pr, k_r], expand(v_s, n_b) + [v_pr, v_r], allowed_b)
            outs.append(a.transpose(1, 2).reshape(n_b * t_b, heads, -1)[run_idx_b])
        x = x + layer.self_attn.o_proj(torch.cat(outs).flatten(1))
        return x + layer.mlp(layer.post_attention_layernorm(x))

    x = base.embed_tokens(tokens)  # [M, H], M = S + M_p + M_r
    recompute = checkpoint_layers and torch.is_grad_enabled()

    def run_layer(x: Tensor, layer: nn.Module) -> Tensor:
        return checkpoint(decoder_layer, x, layer, use_reentrant=False) if recompute else decoder_layer(x, layer)

    for layer in layers:
        # (a per-layer FSDP2 unit: gathered for this layer alone; the recomputation runs inside the unit)
        x = through_unit(layer, run_layer, x, layer)
    x = base.norm(x)

    # Row n's predicting states: its prompt's last token, then its run response tokens.
    last = m_s + (u_mask.long().sum(1).cumsum(0) - 1)  # packed index of each prompt's last token
    first_state = x.index_select(0, last[inverse])[:, None]  # [N, 1, H]; index_select: see k_pr above
    parts = [first_state]
    if t_in:
        parts.append(_unpack(x[m_s + m_p :], r_flat, n, t_in))  # [N, T', H], rows back in their own order
    if T - 1 - t_in > 0:
        parts.append(first_state.new_zeros((n, T - 1 - t_in, first_state.shape[-1])))
    hidden = torch.cat(parts, dim=1)  # [N, T, H]
    return hidden[attention_mask[:, P:].bool()]


def _unpack(packed: Tensor, flat_idx: Tensor, n: int, t: int) -> Tensor:
    """[M, ...] packed rows -> [n, t, ...] with zeros elsewhere (differentiable in `packed`)."""
    out = packed.new_zeros((n * t, *packed.shape[1:]))
    return out.index_copy(0, flat_idx, packed).view(n, t, *packed.shape[1:])


def length_buckets(lengths: list[int], keys_before: int, max_buckets: int = MAX_LENGTH_BUCKETS,
                   max_cuts: int = 64) -> list[tuple[list[int], int]]:
    """Rows grouped for the response attention: [(row indices, padded length)], shortest rows first, each group
    padded to its longest row (its rows in their own order). The groups minimise the attention's padded area, the sum over groups of
    rows x T_b x (keys_before + T_b) (queries by keys: the prompt's keys, then the response's), in at most
    `max_buckets` groups of consecutive lengths; exact by dynamic programming over the distinct lengths (over
    `max_cuts` quantiles of them where there are more), fewer groups where more would not shrink the area."""
    order = sorted(range(len(lengths)), key=lambda r: (lengths[r], r))
    srt = [lengths[r] for r in order]
    # candidate group ends: after the last row of each distinct length (at most max_cuts of them)
    ends = [j for j in range(1, len(srt) + 1) if j == len(srt) or srt[j] != srt[j - 1]]
    if len(ends) > max_cuts:
        ends = sorted({ends[(len(ends) * (k + 1)) // max_cuts - 1] for k in range(max_cuts)})
    bounds = [0, *ends]  # group boundaries may only fall here
    c = len(ends)

    def area(i: int, j: int) -> int:  # sorted rows bounds[i] .. bounds[j] - 1, padded to the longest
        t = srt[bounds[j] - 1]
        return (bounds[j] - bounds[i]) * t * (keys_before + t)

    # best[b][j]: least area of the rows up to bounds[j] in b groups; cut[b][j]: where the last group begins
    inf = float("inf")
    best = [[inf] * (c + 1) for _ in range(max_buckets + 1)]
    cut = [[0] * (c + 1) for _ in range(max_buckets + 1)]
    best[0][0] = 0
    for b in range(1, max_buckets + 1):
        for j in range(1, c + 1):
            for i in range(b - 1, j):
                cost = best[b - 1][i] + area(i, j)
                if cost < best[b][j]:
                    best[b][j], cut[b][j] = cost, i
    b = min(range(1, max_buckets + 1), key=lambda k: (best[k][c], k)) if c else 0
    groups, j = [], c
    while b > 0:
        i = cut[b][j]
        groups.append((sorted(order[bounds[i] : bounds[j]]), srt[bounds[j] - 1]))  # rows in their own order
        j, b = i, b - 1
    return groups[::-1]


def common_prefix_len(seqs: list[list[int]]) -> int:
    """Length of the longest prefix shared by all the sequences."""
    first, n = seqs[0], min(map(len, seqs))
    for j in range(n):
        if any(p[j] != first[j] for p in seqs):
            return j
    return n
