"""Internal layer policies ("Bottom-up Policy Optimization", arXiv 2512.19673): the logit lens as a policy.

The residual stream after decoder layer l (1-indexed, l = 1 .. L), h_l, composed with the unembedding
W_u gives a samplable distribution over the vocabulary, the internal layer policy

    pi_l(. | context) = softmax(W_u h_l)                 (final_norm=False: the BuPO reference code's choice)
    pi_l(. | context) = softmax(W_u norm(h_l))           (final_norm=True: the classic logit lens)

where `norm` is the model's final norm (the one that precedes its output projection). At the top layer
l = L both settings give the model's own policy softmax(W_u norm(h_L)): the raw h_L is not a policy the
model ever samples from, and BuPO's code reads the normed one there too (below).

Mapping to BuPO's code (Trae1ounG/BuPO, `mid_layer_logits`): its `internal_layer = k` is
`lm_head(hidden_states[k + 1])` of a Hugging Face forward with output_hidden_states, whose entry 0 is the
embeddings, entry j (1 <= j < L) the raw output of decoder layer j, and entry L the output of the top layer
*after* the final norm. So BuPO's k is rlvr's `layer = k + 1` with final_norm=False (rlvr counts decoder
layers from 1, BuPO indexes hidden_states from 0), and BuPO's top entry is normed, as rlvr's layer L is.

`layer_hidden_states` runs the backbone only up to layer l (a forward hook stops it there), so an update
that uses pi_l never computes, and never sends gradient to, the layers above l.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


class _Stop(Exception):
    """Raised by the capture hook to end the backbone's forward after the wanted layer."""


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The decoder layers of a Hugging Face *ForCausalLM, bottom to top."""
    from rlvr.models.logprobs import _decoder

    layers = getattr(_decoder(model), "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__}'s backbone has no `layers` list: layer policies need a decoder-only "
                         "transformer (Llama, Qwen, Mistral, ...)")
    return list(layers)


def num_layers(model: nn.Module) -> int:
    return len(decoder_layers(model))


def check_layer(model: nn.Module, layer: int) -> None:
    depth = num_layers(model)
    if not 1 <= layer <= depth:
        raise ValueError(f"algorithm.layer_policy.layer={layer} is not a layer of {type(model).__name__}, which has "
                         f"{depth} decoder layers: use 1 .. {depth} (1 is the bottom layer; {depth} the top)")


def _output(output) -> Tensor:
    return output[0] if isinstance(output, tuple) else output


def layer_hidden_states(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, layer: int, *,
                        final_norm: bool = False) -> Tensor:
    """The residual stream [N, L, H] after decoder layer `layer` (1-indexed), through the final norm if asked
    and always at the top layer (the module docstring)."""
    from rlvr.models.logprobs import _decoder, position_ids_from_mask

    check_layer(model, layer)
    decoder = _decoder(model)
    captured: dict[str, Tensor] = {}

    def hook(module, args, output):
        captured["h"] = _output(output)
        raise _Stop

    handle = decoder_layers(model)[layer - 1].register_forward_hook(hook)
    try:
        decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask),
                use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    hidden = captured["h"]
    # the top layer's policy is the model's own, through the final norm (module docstring)
    return decoder.norm(hidden) if final_norm or layer == len(decoder_layers(model)) else hidden


@torch.no_grad()
def layer_entropies(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, num_response_tokens: int,
                    *, chunk: int = 256) -> dict[str, list[float]]:
    """Mean entropy (nats) of every layer's internal policy over the real response tokens of the batch, with
    and without the final norm: {"raw": [L values], "final_norm": [L values]} (index 0 = layer 1)."""
    from rlvr.core.entropy import entropy_from_logits
    from rlvr.models.logprobs import _decoder, position_ids_from_mask

    decoder = _decoder(model)
    head = model.get_output_embeddings()
    layers = decoder_layers(model)
    t = int(num_response_tokens)
    p = input_ids.shape[1] - t
    counted = attention_mask[:, p:].bool()  # response tokens; column p + j - 1 predicts token j
    states: list[Tensor] = []
    handles = [layer.register_forward_hook(lambda m, a, o: states.append(_output(o)[:, p - 1 : p + t - 1][counted]))
               for layer in layers]
    try:
        decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask),
                use_cache=False)
    finally:
        for h in handles:
            h.remove()
    out: dict[str, list[float]] = {"raw": [], "final_norm": []}
    for hidden in states:  # [M, H] per layer
        for key, rows in (("raw", hidden), ("final_norm", decoder.norm(hidden))):
            total = 0.0
            for start in range(0, rows.shape[0], chunk):
                total += float(entropy_from_logits(head(rows[start : start + chunk]).float()).sum())
            out[key].append(total / max(rows.shape[0], 1))
    return out


def entropy_table(entropies: dict[str, Sequence[float]]) -> str:
    """A fixed-width text table: layer, entropy without and with the final norm."""
    lines = [f"{'layer':>5}  {'H(pi_l), raw h_l':>16}  {'H(pi_l), norm(h_l)':>18}"]
    for i, (raw, normed) in enumerate(zip(entropies["raw"], entropies["final_norm"]), start=1):
        lines.append(f"{i:>5}  {raw:>16.3f}  {normed:>18.3f}")
    return "\n".join(lines)


def plot_entropies(entropies: dict[str, Sequence[float]], path, title: str, vocab_size: int | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    xs = list(range(1, len(entropies["raw"]) + 1))
    ax.plot(xs, entropies["raw"], marker="o", label="W_u h_l (no final norm; BuPO)")
    ax.plot(xs, entropies["final_norm"], marker="s", label="W_u norm(h_l) (logit lens)")
    if vocab_size:
        ax.axhline(math.log(vocab_size), color="grey", linestyle=":", label=f"log |V| = {math.log(vocab_size):.1f}")
    ax.set_xlabel("layer l")
    ax.set_ylabel("entropy of pi_l (nats)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
