"""The fast decoder on the other architectures it claims (qwen2 with q/k/v biases, qwen3 with q/k norms),
and the generic fallback on one it does not (GPT-2)."""

from __future__ import annotations

import copy

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


@pytest.mark.parametrize("model", [lambda: build(Qwen2ForCausalLM, Qwen2Config(**COMMON)),
                                   lambda: build(Qwen3ForCausalLM, Qwen3Config(head_dim=16, **COMMON))],
                         ids=["qwen2", "qwen3"])
def test_weight_major_decode_steps_compute_the_same_logits(model):
    """(W x^T)^T for a decode step's projections (biases included) is the plain x W^T to float rounding, and
    a module that is not a plain nn.Linear is called as itself."""
    from rlvr.rollout.decoders import LlamaDecoder, rows_linear

    model = model()
    prompts, rows = [[5, 9, 11, 3], [7, 8]], [0, 0, 1]
    steps = []
    for weight_major in (True, False):
        dec = LlamaDecoder(model, weight_major=weight_major)
        logits = [dec.prefill(prompts, rows, 4)]
        for token in ([4, 6, 10], [12, 13, 14], [20, 21, 22]):
            logits.append(dec.step(torch.tensor(token)))
        steps.append(torch.stack(logits))
    assert steps[0][1:].abs().max() > 1  # the steps' logits are not all near zero
    torch.testing.assert_close(steps[0], steps[1], rtol=1e-5, atol=1e-5)

    class Scaled(torch.nn.Linear):  # a subclass may change forward: it is not computed as a plain product
        def forward(self, x):
            return 2 * super().forward(x)

    lin, x = Scaled(6, 4), torch.randn(3, 6)
    torch.testing.assert_close(rows_linear(lin, x), lin(x))
    plain = torch.nn.Linear(6, 4)
    torch.testing.assert_close(rows_linear(plain, x), plain(x))


@pytest.mark.parametrize("model", [lambda: build(Qwen2ForCausalLM, Qwen2Config(**COMMON)),
                                   lambda: build(Qwen3ForCausalLM, Qwen3Config(head_dim=16, **COMMON))],
                         ids=["qwen2", "qwen3"])
def test_fused_decode_attention_computes_the_same_logits(model):
    """A decode step's attention through scaled_dot_product_attention (query head h on kv head h // G, left
    padding masked) gives the grouped matmuls' logits: to float rounding in float32; in bfloat16 it stays as
    near the float32 result as the matmuls do."""
    from rlvr.rollout.decoders import LlamaDecoder

    model = model()
    prompts, rows = [[5, 9, 11, 3, 17, 2], [7, 8], [30, 31, 32]], [0, 0, 1, 2, 2]  # three lengths: left padding

    def run(m, attention):
        dec = LlamaDecoder(m, decode_attention=attention)
        logits = [dec.prefill(prompts, rows, 5)]
        for token in ([4, 6, 10, 40, 41], [12, 13, 14, 42, 43], [20, 21, 22, 44, 45], [1, 1, 1, 1, 1]):
            logits.append(dec.step(torch.tensor(token)))
        return torch.stack(logits)

    matmul, sdpa = run(model, "matmul"), run(model, "sdpa")
    assert matmul[1:].abs().max() > 1
    torch.testing.assert_close(sdpa, matmul, rtol=1e-5, atol=1e-5)
    half = copy.deepcopy(model).to(torch.bfloat16)
    assert LlamaDecoder(half).sdpa_decode and not LlamaDecoder(model).sdpa_decode  # the defaults
    err_matmul, err_sdpa = (run(half, "matmul") - matmul).abs(), (run(half, "sdpa") - matmul).abs()
    assert err_sdpa.max() < 0.1 * matmul.abs().max() and err_sdpa.mean() < 1.5 * err_matmul.mean()
    with pytest.raises(ValueError, match="decode_attention must be one of matmul, sdpa"):
        LlamaDecoder(model, decode_attention="flash")


def test_weight_major_default_follows_the_cpu(monkeypatch, tiny_sharp):
    """Weight-major where it was measured to pay: float32 without AMX, bfloat16 with AMX."""
    from rlvr.rollout import decoders

    model, _ = tiny_sharp
    half = copy.deepcopy(model).to(torch.bfloat16)
    for flags, float32, bfloat16 in (({"avx2"}, True, False), ({"avx2", "avx512f", "avx512_bf16"}, True, False),
                                     ({"avx2", "avx512_bf16", "amx_bf16", "amx_tile"}, False, True)):
        monkeypatch.setattr(decoders, "cpu_flags", lambda flags=flags: frozenset(flags))
        assert (decoders.LlamaDecoder(model).linear is decoders.rows_linear) == float32, flags
        assert (decoders.LlamaDecoder(half).linear is decoders.rows_linear) == bfloat16, flags
        assert decoders.LlamaDecoder(half).sdpa_decode and not decoders.LlamaDecoder(model).sdpa_decode
