"""The fast decoder on the real embedded SmolLM2-135M-Instruct (fetched and cached once)."""

from __future__ import annotations

import pytest
import torch

from rlvr.rollout import HFEngine, SamplingParams
from tests.rollout.conftest import chat_prompt, hf_greedy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm():
    from rlvr.models import load_model

    return load_model("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def real_prompts(smollm):
    _, tok = smollm
    return [chat_prompt(tok, q) for q in ("What is 7 times 8?", "Write one sentence about the sea.", "Hi")]


def test_greedy_matches_hf_generate(smollm, real_prompts):
    model, tok = smollm
    batch = HFEngine(model, tok).generate(real_prompts, SamplingParams(temperature=0, max_new_tokens=32))
    assert batch.extra["decoder"] == ["LlamaDecoder"]
    for prompt, got in zip(real_prompts, batch.response_ids):
        assert got == hf_greedy(model, prompt, 32)
    assert len({len(p) for p in real_prompts}) == 3  # the batch really was padded


def test_sampler_logprobs_match_full_forward(smollm, real_prompts):
    model, tok = smollm
    params = SamplingParams(n=2, temperature=0.7, top_k=40, top_p=0.9, max_new_tokens=16, seed=0)
    batch = HFEngine(model, tok).generate(real_prompts, params)
    batch_t = batch.to_tensors(tok.pad_token_id)
    mask = batch_t["attention_mask"]
    with torch.no_grad():
        logits = model(batch_t["input_ids"], attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    t = batch_t["response_ids"].shape[1]
    logits = logits[:, -t - 1 : -1].float() / params.temperature  # [N, T, V]
    # top-k then top-p, vectorised (the tiny-model test checks the filter against a loop)
    kth = logits.topk(params.top_k, dim=-1).values[..., -1:]
    logits = logits.masked_fill(logits < kth, float("-inf"))
    sorted_l, order = logits.sort(-1, descending=True)
    probs = sorted_l.softmax(-1)
    remove = (probs.cumsum(-1) - probs) >= params.top_p
    remove[..., 0] = False
    logits = logits.masked_fill(torch.zeros_like(remove).scatter(-1, order, remove), float("-inf"))
    want = logits.log_softmax(-1).gather(-1, batch_t["response_ids"][..., None]).squeeze(-1)
    got = batch_t["sampler_logprobs"]
    lm = batch_t["loss_mask"]
    assert torch.isfinite(want[lm]).all()
    torch.testing.assert_close(got[lm], want[lm], rtol=0, atol=1e-4)
