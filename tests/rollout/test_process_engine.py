"""The engine in a worker process of its own (rlvr.rollout.process.ProcessEngine): the engine contract across the
process boundary, and a worker that fails, dies or hangs."""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from rlvr.models.tiny import make_tiny_model
from rlvr.rollout import SamplingParams, get_engine
from rlvr.rollout.process import ProcessEngine, RolloutWorkerError


@pytest.fixture(scope="module")
def tiny():
    return make_tiny_model(seed=0)


@pytest.fixture(scope="module")
def engine(tiny):
    model, tokenizer = tiny
    engine = ProcessEngine(model, tokenizer, threads=1, timeout_s=60)
    yield engine
    engine.close()


def _prompts(tokenizer):
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("12+3=", "7*8=", "9-4=")]


def test_samples_what_the_in_process_engine_samples_and_follows_each_push(tiny, engine):
    model, tokenizer = tiny
    model = type(model)(model.config)
    model.load_state_dict(tiny[0].state_dict())
    local = get_engine("hf", model, tokenizer)
    params = SamplingParams(n=3, max_new_tokens=6, seed=5)
    prompts = _prompts(tokenizer)
    for version in (0, 4):
        if version:
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.05 * torch.randn_like(p))
            engine.update_weights(model, version)
        ours, theirs = engine.generate(prompts, params), local.generate(prompts, params)
        assert ours.response_ids == theirs.response_ids and ours.sampler_logprobs == theirs.sampler_logprobs
        assert ours.policy_version == version and engine.policy_version == version
        assert engine.logprobs(prompts[0], [5, 6, 7]) == local.logprobs(prompts[0], [5, 6, 7])
        assert engine.weight_sync_error(model) == 0.0


def test_a_push_that_did_not_happen_is_seen(tiny, engine):
    model, _ = tiny
    changed = {k: v + 0.01 for k, v in model.state_dict().items()}
    assert engine.weight_sync_error(changed) > 0  # the trainer moved on, the worker did not get it
    with pytest.raises(ValueError, match="do not match the worker's model"):
        engine.update_weights({k: v for k, v in list(changed.items())[1:]}, 1)


def test_an_error_in_the_worker_is_raised_with_its_message(tiny, engine):
    with pytest.raises(RolloutWorkerError, match="failed in 'logprobs': ValueError: logprobs needs a non-empty prompt"):
        engine.logprobs([], [1])
    assert engine.generate(_prompts(tiny[1])[:1], SamplingParams(n=1, max_new_tokens=2, seed=0)).response_ids  # still serving


def test_a_dead_worker_is_reported_not_waited_on(tiny):
    engine = ProcessEngine(*tiny, threads=1, timeout_s=60)
    try:
        os.kill(engine.process.pid, signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(RolloutWorkerError, match=r"died \(killed by signal 9\)"):
            engine.generate(_prompts(tiny[1]), SamplingParams(n=2, max_new_tokens=4, seed=0))
        assert time.monotonic() - t0 < 10
    finally:
        engine.close()


def test_a_worker_that_does_not_answer_in_time_is_stopped(tiny):
    model, tokenizer = tiny
    engine = ProcessEngine(model, tokenizer, threads=1, timeout_s=0.05)
    try:
        with pytest.raises(RolloutWorkerError, match="did not answer 'generate' within 0.05s"):
            engine.generate(_prompts(tokenizer) * 8, SamplingParams(n=8, max_new_tokens=64, seed=0))
        engine.process.join(timeout=10)
        assert not engine.process.is_alive()
    finally:
        engine.close()
