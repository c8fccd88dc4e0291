"""The fast decoder on the other architectures it claims (qwen2 with q/k/v biases, qwen3 with q/k norms),
and the generic fallback on one it does not (GPT-2)."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

from rlvr.models.llama import fast_path_problem
from rlvr.rollout import HFEngine, SamplingParams
from tests.rollout.conftest import hf_greedy, sharpen

COMMON = dict(vocab_size=87, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, eos_token_id=2, pad_token_id=0, bos_token_id=None)


def build(cls, config):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = cls(config).eval()
    sharpen(model, seed=2)
    with torch.no_grad():  # biases too, so that qwen2's q/k/v biases matter
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(3))
    return model


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(lambda: build(Qwen2ForCausalLM, Qwen2Config(**COMMON)), id="qwen2"),
        pytest.param(lambda: build(Qwen3ForCausalLM, Qwen3Config(head_dim=16, **COMMON)), id="qwen3"),
        pytest.param(lambda: build(GPT2LMHeadModel, GPT2Config(vocab_size=87, n_embd=64, n_layer=2, n_head=4,
                                                               n_positions=256, eos_token_id=2, bos_token_id=2)), id="gpt2"),
    ],
)
def test_greedy_matches_hf_generate(tiny_sharp, prompts, model):
    _, tok = tiny_sharp
    model = model()
    expected_decoder = "GenericDecoder" if model.config.model_type == "gpt2" else "LlamaDecoder"
    assert (fast_path_problem(model, 100) is None) == (expected_decoder == "LlamaDecoder")
    batch = HFEngine(model, tok).generate(prompts, SamplingParams(temperature=0, max_new_tokens=16))
    assert batch.extra["decoder"] == [expected_decoder]
    for prompt, got in zip(prompts, batch.response_ids):
        assert got == hf_greedy(model, prompt, 16)


def test_fast_path_refusals(tiny_sharp):
    model, tok = tiny_sharp
    assert fast_path_problem(model, 100) is None
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=87, n_embd=32, n_layer=1, n_head=2))
    assert fast_path_problem(gpt2, 100) == "model_type 'gpt2' is not one of llama, qwen2, qwen3, mistral"
    with pytest.raises(ValueError, match="decoder='fast' cannot run this model: model_type 'gpt2'"):
        HFEngine(gpt2, tok, decoder="fast").generate([[1, 5]], SamplingParams(max_new_tokens=2))
    sliding = Qwen2ForCausalLM(Qwen2Config(**{**COMMON, "use_sliding_window": True, "sliding_window": 8,
                                               "max_window_layers": 0}))
    assert fast_path_problem(sliding, 100) == "the model has sliding-window layers"
