from __future__ import annotations

import pytest
import torch

from rlvr.rollout import ENGINES, HFEngine, RolloutBatch, SamplingParams, get_engine


def test_defaults_and_tuples():
    p = SamplingParams(stop=["\n\n"], stop_token_ids=[5])
    assert (p.n, p.temperature, p.top_p, p.top_k, p.max_new_tokens) == (1, 1.0, 1.0, 0, 256)
    assert p.stop == ("\n\n",) and p.stop_token_ids == (5,)
    assert p.seed is None and p.max_prompt_tokens is None and p.truncate_prompt == "error"
    assert SamplingParams(temperature=0).greedy and not p.greedy
    hash(p)  # frozen and hashable


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=-0.1), "temperature must be a finite number >= 0"),
        (dict(temperature=float("nan")), "temperature must be a finite number >= 0"),
        (dict(top_p=0.0), "top_p must be in (0, 1]"),
        (dict(top_p=1.5), "top_p must be in (0, 1]"),
        (dict(top_k=-1), "top_k must be an integer >= 0"),
        (dict(top_k=2.5), "top_k must be an integer >= 0"),
        (dict(n=0), "n must be an integer >= 1"),
        (dict(max_new_tokens=0), "max_new_tokens must be an integer >= 1"),
        (dict(stop=("",)), "stop must be non-empty strings"),
        (dict(stop_token_ids=(-1,)), "stop_token_ids must be integers >= 0"),
        (dict(seed=1.5), "seed must be an integer or None"),
        (dict(max_prompt_tokens=0), "max_prompt_tokens must be an integer >= 1 or None"),
        (dict(truncate_prompt="right"), "truncate_prompt must be one of error, left"),
    ],
)
def test_invalid_params_name_the_valid_range(kwargs, message):
    with pytest.raises(ValueError) as err:
        SamplingParams(**kwargs)
    assert message in str(err.value)
    assert repr(next(iter(kwargs.values()))) in str(err.value)  # and the offending value


def test_all_problems_reported_at_once():
    with pytest.raises(ValueError, match="n must.*temperature must"):
        SamplingParams(n=0, temperature=-1)


def test_registry_and_get_engine(tiny_sharp):
    model, tok = tiny_sharp
    assert {"hf", "vllm"} <= set(ENGINES)  # vllm is imported only when chosen (tests/rollout/test_vllm.py)
    engine = get_engine("hf", model, tok, max_batch_size=8)
    assert isinstance(engine, HFEngine) and engine.max_batch_size == 8
    with pytest.raises(KeyError, match="unknown rollout engine 'hff'; known: hf, vllm"):
        get_engine("hff", model, tok)
    with pytest.raises(ValueError, match="unknown decoder 'fastest'; known: auto, fast, generic"):
        get_engine("hf", model, tok, decoder="fastest")
    with pytest.raises(ValueError, match="max_batch_size must be an integer >= 1"):
        get_engine("hf", model, tok, max_batch_size=0)


def test_to_tensors_layout_by_hand():
    batch = RolloutBatch(
        prompt_index=[0, 1],
        prompt_ids=[[11, 12, 13], [21]],
        response_ids=[[31], [41, 42, 2]],
        sampler_logprobs=[[-0.5], [-1.0, -2.0, -3.0]],
        finish_reasons=["length", "stop"],
        response_lengths=[1, 3],
        num_generated_tokens=4,
    )
    t = batch.to_tensors(pad_token_id=0)
    assert t["input_ids"].tolist() == [[11, 12, 13, 31, 0, 0], [0, 0, 21, 41, 42, 2]]
    assert t["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]]
    assert t["response_ids"].tolist() == [[31, 0, 0], [41, 42, 2]]
    assert t["loss_mask"].tolist() == [[True, False, False], [True, True, True]]
    assert t["loss_mask"].dtype == torch.bool
    assert t["sampler_logprobs"].tolist() == [[-0.5, 0.0, 0.0], [-1.0, -2.0, -3.0]]
    assert t["group_ids"].tolist() == [0, 1]
    assert len(batch) == 2


def test_to_tensors_rejects_mismatched_logprobs():
    batch = RolloutBatch([0], [[1]], [[2, 3]], [[-1.0]], ["length"], [2])
    with pytest.raises(ValueError, match="sample 0: 2 response tokens but 1 sampler log-probs"):
        batch.to_tensors(0)
