from __future__ import annotations

import pytest
import torch

from rlvr.models.tiny import DEFAULT_CHARS, make_tiny_model, make_tiny_tokenizer


def test_round_trip_every_default_character(tiny):
    _, tok = tiny
    text = DEFAULT_CHARS + "\n  What is 2+3? (x_1 >= 'a') \"ok\"; #done!"
    ids = tok.encode(text)
    assert len(ids) == len(text)  # one token per character
    assert tok.decode(ids) == text


def test_special_tokens_and_ids(tiny):
    model, tok = tiny
    assert (tok.pad_token, tok.pad_token_id) == ("<pad>", 0)
    assert tok.convert_tokens_to_ids("<|im_start|>") == 1
    assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", 2)
    assert tok.encode("<|im_start|>ab<|im_end|>") == [1, 4 + 10, 4 + 11, 2]  # 'a' follows the 10 digits
    assert tok.encode("é") == [tok.unk_token_id]
    assert len(tok) == 4 + len(DEFAULT_CHARS) == model.config.vocab_size
    assert model.config.eos_token_id == model.generation_config.eos_token_id == 2
    assert model.generation_config.pad_token_id == 0


def test_chat_template_chatml_with_generation_prompt(tiny):
    _, tok = tiny
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+3?"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"
    )
    without = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert text == without + "<|im_start|>assistant\n"


def test_left_padding(tiny):
    _, tok = tiny
    batch = tok(["ab", "abcd"], padding=True)
    assert batch["input_ids"][0][:2] == [0, 0]
    assert batch["attention_mask"] == [[0, 0, 1, 1], [1, 1, 1, 1]]


def test_seed_determines_weights_and_global_rng_is_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, _ = make_tiny_model(seed=7)
    assert torch.equal(torch.rand(3), expected)
    b, _ = make_tiny_model(seed=7)
    c, _ = make_tiny_model(seed=8)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb)
    assert not torch.allclose(pa, pc)


def test_architecture_float32_tied_gqa():
    model, _ = make_tiny_model(num_layers=3, hidden_size=32, num_heads=4, max_position_embeddings=128)
    assert model.dtype == torch.float32
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (3, 32)
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (4, 2)
    assert model.config.max_position_embeddings == 128


def test_custom_chars_and_bad_chars():
    tok = make_tiny_tokenizer("01+=")
    assert len(tok) == 8
    assert tok.decode(tok.encode("1+1=10")) == "1+1=10"
    with pytest.raises(ValueError, match="repeated"):
        make_tiny_tokenizer("abca")
    with pytest.raises(ValueError, match="divisible"):
        make_tiny_model(hidden_size=30, num_heads=4)
