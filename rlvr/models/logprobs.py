"""Per-token log-probabilities (and entropies) of response tokens, without the [N, L, V] logits.

Batch layout used everywhere in rlvr:

    input_ids       [N, P + T]  prompts LEFT-padded to P, then responses RIGHT-padded to T
    attention_mask  [N, P + T]  1 on real tokens, 0 on padding
    position_ids    = cumsum(attention_mask) - 1, clamped at 0, so left padding does not shift positions
                      (the same positions Hugging Face `generate` gives a left-padded batch)

The token at column P + t (response token t) is predicted by the hidden state at column P + t - 1, so
only the T hidden states at columns P - 1 .. P + T - 2 go through the output projection.

Memory. A causal LM's `forward` returns logits for every position, [N, L, V] float32 (for SmolLM2,
16 x 320 x 49152 x 4 bytes = 1 GiB), and a log-softmax over them doubles that, before autograd keeps
both for the backward pass. Here the backbone runs alone; the output projection and the softmax run
on at most `chunk_size` response tokens at a time, and only on tokens whose attention_mask is 1. With
gradient enabled each chunk is wrapped in activation checkpointing (unless the whole call is small), so autograd keeps just the chunk's
[chunk, H] hidden-state slice and recomputes its logits during the backward pass: peak logits memory is
one chunk, in the forward and in the backward pass (the recomputation costs one extra output-projection
matmul per chunk; the same trade as Liger's fused linear cross-entropy).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from rlvr.core.filtering import filtering_active, keep_mask
from rlvr.models.llama import packed_path_problem, predicting_hidden_packed, through_unit

# Default chunk: about 2**24 float32 logits (64 MiB) per chunk, 341 tokens for SmolLM2's 49152-token
# vocabulary, and never fewer than 64 tokens. Measured on the 2-core CPU (benchmarks/NOTES.md): the
# output projection's forward + backward per token is ~15% slower at 341 than at 682 tokens, ~35% at 170,
# twice as slow at 64, while each halving saves about a quarter of the chunk's memory in training.
_CHUNK_LOGITS = 2**24
_MIN_CHUNK_TOKENS = 64
# When a whole call has at most this many logits (682 response tokens for SmolLM2), autograd keeps each
# chunk's logits instead of recomputing them in the backward pass: at most ~400 MB kept (the shifted
# logits, their exponentials and the probabilities), for ~6% less time per training step on the CPU.
_KEEP_LOGITS = 2**25


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """position_ids [N, L] = cumsum(attention_mask) - 1, clamped at 0 (left padding gets position 0)."""
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


def backbone_hidden_states(model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Final hidden states [N, L, H] of a causal LM's backbone (after its last norm), no output projection.

    `model` is a Hugging Face `*ForCausalLM` (its decoder is `model.get_decoder()`, e.g. `model.model`
    for Llama). Positions come from `position_ids_from_mask`. Used for log-probs here and for a PPO
    value head on top of the same backbone.
    """
    _check_batch(input_ids, attention_mask)
    decoder = _decoder(model)
    out = decoder(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    )
    return out.last_hidden_state


def response_logprobs(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    num_response_tokens: int,
    *,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    return_entropy: bool = False,
    packed: bool | None = None,
    top_k: int = 0,
    top_p: float = 1.0,
    layer: int | None = None,
    final_norm: bool = False,
    checkpoint_layers: bool = False,
    entropy_grad: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Log-probs [N, T] (float32) of the response tokens, and optionally the entropies [N, T].

        z_t          = W h_{P+t-1} / temperature           (W: the output projection, h: final hidden)
        logprobs_t   = z_t[y_t] - logsumexp(z_t),          y_t = input_ids[:, P + t]
        entropy_t    = -sum_v softmax(z_t)_v log softmax(z_t)_v     (rlvr.core.entropy.entropy_from_logits)

    i.e. under softmax(logits / temperature), the distribution the sampler draws from at that
    temperature. With `top_k` > 0 or `top_p` < 1 the log-probs and entropies are those of the
    *processed* distribution the sampler drew from (`rlvr.core.filtering`): tokens outside the kept set
    get probability 0 and the rest are renormalised, so on-policy log-probs equal the sampler's
    `sampler_logprobs` up to float rounding. The kept set is a constant for the gradient; the target
    token is always kept (a boundary token that rounding moved out of the set would otherwise read
    -inf). Layout: see the module docstring; T = `num_response_tokens`, P = L - T >= 1.
    Response columns whose attention_mask is 0 (right padding) are not computed: their log-prob and
    entropy are 0 and get no gradient. Values are equal to a log_softmax over the full logits up to
    float rounding; logits are computed in float32 whatever the model's dtype.

    Works with gradient (training: gradients reach the backbone and the output projection) and under
    `torch.no_grad()` (old / reference log-probs).

    chunk_size: response tokens per output-projection call; None picks about 2**24 logits per chunk.
    packed: run the backbone with `rlvr.models.llama.predicting_hidden_packed` (each distinct prompt
      once, response tokens without padding; same values up to float rounding). None: whenever the model
      and batch allow it (Llama-family model, left-padded prompts); True: require it; False: never.
    layer: the internal policy of decoder layer `layer` (1-indexed) instead of the model's own, z_t = W h^l
      (through the final norm if `final_norm`; rlvr.models.layers): the backbone stops after that layer,
      so no layer above it is computed or receives gradient. Uses the padded forward.
    checkpoint_layers: with gradient enabled, recompute each decoder layer in the backward pass instead of
      keeping its activations (the packed forward; the padded one follows the model's own
      `gradient_checkpointing_enable()` setting).
    entropy_grad: False returns the entropies without a graph (a metric only): with one, the entropy-only
      part of each checkpointed logits chunk keeps its recomputed [chunk, vocab] tensors alive after a
      backward pass through the log-probs alone, as long as the entropies are referenced.
    """
    # An FSDP2 root sharded per layer: its own parameters (embeddings, norm, output projection) gathered for
    # the whole call and its backward (rlvr.models.llama.through_unit).
    return through_unit(model, _response_logprobs, model, input_ids, attention_mask, num_response_tokens,
                        temperature=temperature, chunk_size=chunk_size, return_entropy=return_entropy, packed=packed,
                        top_k=top_k, top_p=top_p, layer=layer, final_norm=final_norm,
                        checkpoint_layers=checkpoint_layers, entropy_grad=entropy_grad)


def _response_logprobs(model, input_ids, attention_mask, num_response_tokens, *, temperature, chunk_size,
                       return_entropy, packed, top_k, top_p, layer, final_norm, checkpoint_layers, entropy_grad):
    _check_batch(input_ids, attention_mask)
    num_rows, length = input_ids.shape
    T = int(num_response_tokens)
    P = length - T
    if not 0 < T < length:
        raise ValueError(
            f"num_response_tokens must be in [1, {length - 1}] for input_ids of length {length} "
            f"(at least one prompt token predicts the first response token), got {num_response_tokens}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0 < top_p <= 1 or top_k < 0:
        raise ValueError(f"top_p must be in (0, 1] and top_k >= 0 (0 and 1 mean off), got top_k={top_k}, top_p={top_p}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
    _decoder(model)  # fail on a model without a backbone before any work
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output projection (get_output_embeddings() is None)")

    counted = attention_mask[:, P:].bool()  # [N, T]
    if not attention_mask[:, P - 1 : P + T - 1].bool()[counted].all():
        raise ValueError(
            "every real response token must follow a real token: prompts must be non-empty and LEFT-padded "
            "to P, responses RIGHT-padded (got a response token after a padding column)"
        )

    problem = packed_path_problem(model, attention_mask, T) if packed is not False else "packed=False"
    if layer is not None:
        problem = "a layer policy uses the padded forward"
    if packed and problem is not None:
        raise ValueError(f"packed=True but the packed forward cannot run this batch: {problem}")
    if problem is None:
        rows = predicting_hidden_packed(model, input_ids, attention_mask, T, checkpoint_layers=checkpoint_layers)  # [M, H]
    else:
        if layer is not None:
            from rlvr.models.layers import layer_hidden_states

            hidden = layer_hidden_states(model, input_ids, attention_mask, layer, final_norm=final_norm)
        else:
            hidden = backbone_hidden_states(model, input_ids, attention_mask)  # [N, L, H]
        predicting = hidden[:, P - 1 : P + T - 1]  # [N, T, H]: column P+t-1 predicts response token t
        rows = predicting[counted]  # [M, H], M = real response tokens
    row_targets = input_ids[:, P:][counted]  # [M]

    vocab = model.config.vocab_size
    if chunk_size is None:
        chunk_size = max(_MIN_CHUNK_TOKENS, _CHUNK_LOGITS // vocab)
    lp_parts, ent_parts = head_chunks(head, rows, row_targets, vocab, chunk_size=chunk_size, temperature=temperature,
                                      return_entropy=return_entropy, top_k=top_k, top_p=top_p,
                                      entropy_grad=entropy_grad)
    logprobs = _scatter_rows(lp_parts, counted, num_rows, T, rows)
    entropy = _scatter_rows(ent_parts, counted, num_rows, T, rows) if return_entropy else None
    return logprobs, entropy


def head_chunks(head: nn.Module, rows: Tensor, row_targets: Tensor, vocab: int, *, chunk_size: int,
                temperature: float, return_entropy: bool, top_k: int, top_p: float, entropy_grad: bool,
                fused: bool | None = None) -> tuple[list[Tensor], list[Tensor | None]]:
    """Each chunk's log-probs [C] (and entropies, or None) of `row_targets` [M] under the output projection of
    `rows` [M, H]. `fused`: None lets `_HeadLogprobs` take every chunk it can; False never (benchmarks)."""
    # Checkpoint whenever anything upstream of the logits is trained (the backbone, or only the head),
    # unless the call is small enough to keep all its logits.
    use_checkpoint = (
        torch.is_grad_enabled()
        and (rows.requires_grad or any(p.requires_grad for p in head.parameters()))
        and rows.shape[0] * vocab > _KEEP_LOGITS
    )
    # The checkpointed chunk as one autograd Function where nothing but the log-probs needs a gradient and the
    # head is a plain Linear (not a LoRA, FSDP or other wrapper): the same values, fewer passes (_HeadLogprobs).
    can_fuse = (type(head) is nn.Linear and not filtering_active(vocab, top_k, top_p)
                and not (return_entropy and entropy_grad))
    fused = can_fuse if fused is None else fused and can_fuse
    lp_parts, ent_parts = [], []
    for start in range(0, rows.shape[0], chunk_size):
        chunk_rows, chunk_targets = rows[start : start + chunk_size], row_targets[start : start + chunk_size]
        args = (head, chunk_rows, chunk_targets, temperature, return_entropy, top_k, top_p, entropy_grad)
        if use_checkpoint and fused:
            lp, ent = _HeadLogprobs.apply(chunk_rows, head.weight, head.bias, chunk_targets, temperature,
                                          return_entropy)
            ent = ent if return_entropy else None
        elif use_checkpoint:
            lp, ent = checkpoint(_chunk_logprobs, *args, use_reentrant=False)
        else:
            lp, ent = _chunk_logprobs(*args)
        lp_parts.append(lp)
        ent_parts.append(ent)
    return lp_parts, ent_parts


def _chunk_logprobs(
    head: nn.Module, rows: Tensor, targets: Tensor, temperature: float, with_entropy: bool,
    top_k: int = 0, top_p: float = 1.0, entropy_grad: bool = True,
) -> tuple[Tensor, Tensor | None]:
    z = head(rows).float()  # [C, V]
    if temperature != 1.0:
        z = z / temperature
    if filtering_active(z.shape[-1], top_k, top_p):
        return _filtered_chunk(z, targets, with_entropy, top_k, top_p, entropy_grad)
    # One pass per step over the [C, V] logits: shift by the (detached) max, exponentiate once, and take
    # both the log-prob and the entropy from the same normaliser:
    #   log p_t = z_t - lse,   H = -sum_v p_v log p_v = lse - sum_v p_v z_v   (z shifted, so lse in [0, log V]).
    # The shift is constant per row, so the values and gradients are those of the unshifted formulas.
    shifted = z - z.amax(dim=-1, keepdim=True).detach()
    exp = shifted.exp()
    total = exp.sum(dim=-1)
    lse = total.log()
    logprobs = shifted.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse
    entropy = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            probs = exp / total.unsqueeze(-1)
            entropy = lse - (probs * shifted).sum(dim=-1)
    return logprobs, entropy


class _HeadLogprobs(torch.autograd.Function):
    """One checkpointed logits chunk, fused: log p(y) of each row's target under softmax(W h / temperature)
    (and, without a gradient, the entropy), keeping only the rows, the targets and each row's logsumexp.

    The backward pass recomputes z = W h / temperature once, turns it in place into the softmax
    p = exp(z - lse), and then into dL/dz = g (onehot(y) - p) / temperature, from which the two products give
    dL/dh and dL/dW (and dL/db). The generic checkpoint of `_chunk_logprobs` reruns the whole forward and
    then autograd's backward of each of its ops, about ten passes over the [C, V] logits against three here,
    and holds several [C, V] tensors at once against one. The values are those of `_chunk_logprobs` up to
    float rounding (tests/models/test_logprobs.py).
    """

    @staticmethod
    def forward(ctx, rows, weight, bias, targets, temperature, with_entropy):
        z = nn.functional.linear(rows, weight, bias).float()  # [C, V]
        if temperature != 1.0:
            z.div_(temperature)
        shift = z.amax(dim=-1, keepdim=True)
        z.sub_(shift)
        target_z = z.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        if with_entropy:  # H = lse - sum_v p_v z_v on the shifted logits
            exp = z.exp()
            total = exp.sum(dim=-1)
            entropy = total.log() - exp.mul_(z).sum(dim=-1) / total
            del exp
        else:
            total = z.exp_().sum(dim=-1)
            entropy = z.new_empty(0)
        lse = total.log()
        ctx.save_for_backward(rows, weight, bias, targets, shift.squeeze(-1) + lse)
        ctx.temperature = temperature
        ctx.mark_non_differentiable(entropy)
        return target_z - lse, entropy

    @staticmethod
    def backward(ctx, grad, _grad_entropy):
        rows, weight, bias, targets, lse = ctx.saved_tensors
        z = nn.functional.linear(rows, weight, bias).float()
        if ctx.temperature != 1.0:
            z.div_(ctx.temperature)
        g = grad / ctx.temperature  # [C]
        dz = z.sub_(lse.unsqueeze(-1)).exp_().mul_(-g.unsqueeze(-1))  # -g p
        dz.scatter_add_(-1, targets.unsqueeze(-1), g.unsqueeze(-1))  # + g onehot(y)
        dz = dz.to(weight.dtype)
        need_rows, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_rows = dz @ weight if need_rows else None
        grad_weight = dz.t() @ rows if need_weight else None
        grad_bias = dz.sum(dim=0) if bias is not None and need_bias else None
        return grad_rows, grad_weight, grad_bias, None, None, None


def _filtered_chunk(z: Tensor, targets: Tensor, with_entropy: bool, top_k: int, top_p: float,
                    entropy_grad: bool = True):
    """Log-prob and entropy under the top-k / top-p processed distribution (see `response_logprobs`).

    Removed tokens are excluded with a `where` on their exponentials rather than a -inf fill, so no
    inf or nan enters the backward pass; the kept set itself is detached.
    """
    keep = keep_mask(z, top_k, top_p)
    keep[torch.arange(z.shape[0], device=z.device), targets] = True
    shifted = z - z.amax(dim=-1, keepdim=True).detach()  # the max token is always kept
    exp = torch.where(keep, shifted.exp(), torch.zeros((), dtype=z.dtype, device=z.device))
    total = exp.sum(dim=-1)
    lse = total.log()
    logprobs = shifted.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse
    entropy = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            probs = exp / total.unsqueeze(-1)  # exactly 0 on removed tokens, where `shifted` is finite
            entropy = lse - (probs * shifted).sum(dim=-1)
    return logprobs, entropy


def _scatter_rows(parts: list[Tensor | None], counted: Tensor, n: int, t: int, like: Tensor) -> Tensor:
    values = torch.cat(parts) if parts else like.new_zeros(0, dtype=torch.float32)
    out = torch.zeros(n, t, dtype=torch.float32, device=like.device)
    # masked_scatter is differentiable in its source: padded columns stay exactly 0 with no gradient.
    return out.masked_scatter(counted, values)


def _decoder(model: nn.Module) -> nn.Module:
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is None or decoder is model:
        raise ValueError(
            f"cannot find the backbone of {type(model).__name__}: expected a Hugging Face *ForCausalLM "
            "whose get_decoder() returns its base model (e.g. model.model for Llama)"
        )
    return decoder


def _check_batch(input_ids: Tensor, attention_mask: Tensor) -> None:
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [N, L], got shape {tuple(input_ids.shape)}")
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask {tuple(attention_mask.shape)} must have the shape of input_ids {tuple(input_ids.shape)}"
        )
