"""The sampling filter (temperature, top-k, top-p) as one function, shared by sampler and trainer.

The rollout engine draws each token from the *processed* distribution

    q(v) = softmax(filter(z / temperature))_v,   filter: top-k, then top-p; removed tokens get 0

and reports log q(y_t) as its `sampler_logprobs` (vLLM calls these "processed log-probs"). For the
importance ratio q_old / q_sampler, the PPO ratio and the KL against a reference to be ratios of the
same quantity, the trainer must evaluate its log-probs under the same filter: log-probs of the full
softmax differ from log q by log(kept mass), which is large for small top_p or top_k (at top_p = 0.5
the kept mass is about 0.5 per token, so an on-policy sequence of T tokens would read an IS weight of
2^-T instead of 1). `keep_mask` is that filter; `rlvr.rollout.sampling` and
`rlvr.models.logprobs.response_logprobs` both call it, so they cannot drift apart.

The kept set is a function of the logits, which carry gradient in training; it is computed on
detached values and treated as a constant (a piecewise-constant set has zero derivative almost
everywhere), so the gradient is that of log q restricted to the kept tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlvr.core.masked import require


def filtering_active(vocab: int, top_k: int, top_p: float) -> bool:
    """True when top-k or top-p removes anything from a `vocab`-sized distribution."""
    return (0 < top_k < vocab) or top_p < 1.0


def keep_mask(scaled_logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Bool [B, V]: the tokens kept by top-k then top-p of `scaled_logits` (already divided by temperature).

    top-k keeps every token whose value is at least the k-th largest (ties at the boundary stay, as in
    Hugging Face's TopKLogitsWarper); 0 (or >= V) keeps all. top-p (Holtzman et al., "The Curious Case
    of Neural Text Degeneration", ICLR 2020) then keeps, in order of decreasing probability under the
    top-k-renormalised distribution, each token whose preceding mass is below top_p: the smallest set
    whose mass reaches top_p, never empty. The most probable token is always kept.
    """
    require("keep_mask", scaled_logits=scaled_logits)
    if scaled_logits.dim() != 2:
        raise ValueError(f"keep_mask takes [B, V] logits, got shape {list(scaled_logits.shape)}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], 1 meaning off (got {top_p})")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, 0 meaning off (got {top_k})")
    z = scaled_logits.detach()
    vocab = z.shape[-1]
    keep = torch.ones_like(z, dtype=torch.bool)
    if 0 < top_k < vocab:
        kth = torch.topk(z, top_k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)
        keep = z >= kth
    if top_p < 1.0:
        masked = z.masked_fill(~keep, float("-inf")) if not bool(keep.all()) else z
        sorted_logits, order = torch.sort(masked, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = torch.cumsum(probs, dim=-1).sub_(probs)
        remove_sorted = mass_before >= top_p
        remove_sorted[:, 0] = False
        removed = torch.zeros_like(remove_sorted).scatter_(-1, order, remove_sorted)
        keep = keep & ~removed
    return keep


def filter_logits_(logits: Tensor, temperature: float, top_k: int, top_p: float) -> Tensor:
    """In place: logits / temperature, then top-k, then top-p (`keep_mask`); removed tokens become -inf."""
    require("filter_logits_", logits=logits)
    if temperature != 1.0:
        logits.div_(temperature)
    if filtering_active(logits.shape[-1], top_k, top_p):
        logits.masked_fill_(~keep_mask(logits, top_k, top_p), float("-inf"))
    return logits
