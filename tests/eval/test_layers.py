"""Each layer's policy entropy over a model's own responses (rlvr.eval.layers, `rlvr analyze layers`)."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.eval.layers import response_layer_entropies
from rlvr.models.layers import layer_entropies
from rlvr.models.tiny import make_tiny_model
from rlvr.rollout import SamplingParams, get_engine


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return make_tiny_model(seed=0)


def test_the_mean_weighs_every_response_token_once_whatever_the_batches(tiny):
    model, tokenizer = tiny
    prompts = [tokenizer("1+2=", add_special_tokens=False)["input_ids"], tokenizer("33*4=", add_special_tokens=False)["input_ids"]]
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=6, seed=3)
    one, tokens_one = response_layer_entropies(model, tokenizer, prompts, params, batch_size=1)
    whole, tokens_whole = response_layer_entropies(model, tokenizer, prompts, params, batch_size=16)
    # By hand: per response, the layer means times its token count, summed, over all tokens.
    batch = get_engine("hf", model, tokenizer).generate(prompts, params)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sums, count = [0.0, 0.0], 0
    for i in range(len(batch)):
        t = batch.select([i]).to_tensors(pad)
        n = int(t["loss_mask"].sum())
        means = layer_entropies(model, t["input_ids"], t["attention_mask"], t["loss_mask"].shape[1])["raw"]
        sums = [s + m * n for s, m in zip(sums, means)]
        count += n
    assert tokens_one == tokens_whole == count == sum(len(r) for r in batch.response_ids) > 0
    for a, b, c in zip(one["raw"], whole["raw"], [s / count for s in sums]):
        assert a == pytest.approx(c, rel=1e-5) and b == pytest.approx(c, rel=1e-4)
    assert len(whole["final_norm"]) == 2 and all(0 < h <= math.log(model.config.vocab_size) + 1e-4 for h in whole["final_norm"])

