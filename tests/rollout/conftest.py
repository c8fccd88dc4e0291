from __future__ import annotations

import pytest
import torch

from rlvr.models.tiny import make_tiny_model


def sharpen(model, std: float = 0.3, seed: int = 0):
    """Re-draw the matrices with a larger std: the default tiny model's near-uniform logits make greedy
    decoding repeat one token, which would let many bugs pass unseen."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, std, generator=g)
    return model


@pytest.fixture(scope="session")
def tiny_sharp():
    """(model, tokenizer): tiny Llama whose greedy outputs vary; tests must not modify it."""
    model, tok = make_tiny_model(seed=0)
    return sharpen(model, seed=2), tok


def chat_prompt(tok, text: str) -> list[int]:
    ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


@pytest.fixture(scope="session")
def prompts(tiny_sharp):
    """Chat prompts of different lengths (so batches need padding); greedy, some stop at eos within 24
    tokens and some do not."""
    _, tok = tiny_sharp
    return [chat_prompt(tok, q) for q in ("hi", "What is 12+30?", "abc", "2*3=", "hello world")]


def hf_greedy(model, prompt: list[int], max_new_tokens: int) -> list[int]:
    """Hugging Face generate, greedy, one unpadded prompt: the reference continuation (up to eos)."""
    out = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=max_new_tokens,
                         attention_mask=torch.ones(1, len(prompt), dtype=torch.long))
    return out[0, len(prompt):].tolist()
