from __future__ import annotations

import pytest
import torch

from rlvr.rollout import HFEngine, SamplingParams
from tests.rollout.conftest import hf_greedy

DECODERS = ("fast", "generic")


@pytest.mark.parametrize("decoder", DECODERS)
def test_greedy_matches_hf_generate(tiny_sharp, prompts, decoder):
    model, tok = tiny_sharp
    batch = HFEngine(model, tok, decoder=decoder).generate(prompts, SamplingParams(temperature=0, max_new_tokens=24))
    for i, prompt in enumerate(prompts):
        want = hf_greedy(model, prompt, 24)
        assert batch.response_ids[i] == want
        assert batch.finish_reasons[i] == ("stop" if want[-1] == tok.eos_token_id else "length")
    assert "stop" in batch.finish_reasons and "length" in batch.finish_reasons  # both paths exercised
    assert batch.extra["decoder"] == [{"fast": "LlamaDecoder", "generic": "GenericDecoder"}[decoder]]


def test_padding_and_batch_mates_do_not_change_a_greedy_result(tiny_sharp, prompts):
    model, tok = tiny_sharp
    engine = HFEngine(model, tok)
    params = SamplingParams(temperature=0, max_new_tokens=16, ignore_eos=True)
    alone = [engine.generate([p], params).response_ids[0] for p in prompts]
    together = engine.generate(prompts, params).response_ids
    reordered = engine.generate(prompts[::-1], params).response_ids[::-1]
    assert together == alone == reordered


def reference_logprobs(model, batch, params):
    """Full forward pass of each sampled sequence, filters applied by the slow reference."""
    from tests.rollout.test_sampling import reference_filter

    out = []
    for prompt, response in zip(batch.prompt_ids, batch.response_ids):
        ids = torch.tensor([prompt + response])
        with torch.no_grad():
            logits = model(ids).logits[0, len(prompt) - 1 : -1]  # [T, V]: the logits each token was drawn from
        filtered = reference_filter(logits, params.temperature, params.top_k, params.top_p)
        lp = torch.log_softmax(filtered, -1).gather(-1, torch.tensor(response)[:, None]).squeeze(-1)
        out.append(lp)
    return out


@pytest.mark.parametrize(
    "decoder, temperature, top_k, top_p",
    [("fast", 0.7, 0, 1.0), ("fast", 1.4, 12, 1.0), ("fast", 0.9, 0, 0.8), ("fast", 0.6, 20, 0.9), ("generic", 0.6, 20, 0.9)],
)
def test_sampler_logprobs_match_full_forward(tiny_sharp, prompts, decoder, temperature, top_k, top_p):
    model, tok = tiny_sharp
    params = SamplingParams(n=2, temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=12, seed=5)
    batch = HFEngine(model, tok, decoder=decoder).generate(prompts, params)
    for got, want in zip(batch.sampler_logprobs, reference_logprobs(model, batch, params)):
        assert torch.isfinite(want).all()  # every sampled token is inside the reference's kept set
        torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), want, rtol=0, atol=1e-4)


def test_greedy_logprobs_are_plain_log_softmax(tiny_sharp, prompts):
    model, tok = tiny_sharp
    params = SamplingParams(temperature=0, max_new_tokens=8)
    batch = HFEngine(model, tok).generate(prompts, params)
    want = reference_logprobs(model, batch, SamplingParams(temperature=1.0))
    for got, w in zip(batch.sampler_logprobs, want):
        torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), w, rtol=0, atol=1e-4)


def test_prompt_major_order_and_lengths(tiny_sharp, prompts):
    model, tok = tiny_sharp
    batch = HFEngine(model, tok).generate(prompts[:2], SamplingParams(n=3, max_new_tokens=10, seed=0))
    assert batch.prompt_index == [0, 0, 0, 1, 1, 1]
    assert batch.prompt_ids == [prompts[0]] * 3 + [prompts[1]] * 3
    assert batch.response_lengths == [len(r) for r in batch.response_ids]
    assert batch.num_generated_tokens == sum(batch.response_lengths)
    assert all(len(lp) == len(r) for lp, r in zip(batch.sampler_logprobs, batch.response_ids))
    assert len({tuple(r) for r in batch.response_ids[:3]}) > 1  # samples of one prompt differ
    assert batch.gen_time_s > 0
    t = batch.to_tensors(tok.pad_token_id)
    assert t["loss_mask"].sum(-1).tolist() == batch.response_lengths
    assert t["input_ids"].shape == (6, max(map(len, prompts[:2])) + max(batch.response_lengths))


def test_seeds_reproduce_and_do_not_depend_on_batching(tiny_sharp, prompts):
    model, tok = tiny_sharp
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=10, seed=11)
    first = HFEngine(model, tok).generate(prompts, params)
    again = HFEngine(model, tok).generate(prompts, params)
    chunked = HFEngine(model, tok, max_batch_size=2).generate(prompts, params)
    generic = HFEngine(model, tok, decoder="generic").generate(prompts, params)
    other_mates = HFEngine(model, tok).generate(prompts[:2] + [prompts[0]], params)
    assert first.response_ids == again.response_ids == chunked.response_ids == generic.response_ids
    assert first.sampler_logprobs == again.sampler_logprobs
    assert other_mates.response_ids[:6] == first.response_ids[:6]
    other_seed = HFEngine(model, tok).generate(prompts, SamplingParams(n=3, max_new_tokens=10, seed=12))
    assert other_seed.response_ids != first.response_ids


def test_seed_none_follows_torch_global_rng(tiny_sharp, prompts):
    model, tok = tiny_sharp
    engine, params = HFEngine(model, tok), SamplingParams(n=2, max_new_tokens=8)
    torch.manual_seed(0)
    a = engine.generate(prompts, params).response_ids
    b = engine.generate(prompts, params).response_ids
    torch.manual_seed(0)
    assert engine.generate(prompts, params).response_ids == a != b


def test_stop_string_spanning_tokens(tiny_sharp, prompts):
    model, tok = tiny_sharp
    engine = HFEngine(model, tok)
    free = engine.generate(prompts[1:2], SamplingParams(temperature=0, max_new_tokens=30, ignore_eos=True))
    text = tok.decode(free.response_ids[0])
    stop = text[5:8]  # three characters = three tokens of the char-level tokenizer
    first = text.index(stop) + len(stop)  # tokens up to and including the one completing it
    batch = engine.generate(prompts[1:2], SamplingParams(temperature=0, max_new_tokens=30, ignore_eos=True, stop=("zzzz", stop)))
    assert batch.response_ids[0] == free.response_ids[0][:first]
    assert batch.finish_reasons == ["stop"]
    assert tok.decode(batch.response_ids[0]).endswith(stop)


def test_stop_token_ids_eos_and_length(tiny_sharp, prompts):
    model, tok = tiny_sharp
    engine = HFEngine(model, tok)
    free = engine.generate(prompts, SamplingParams(temperature=0, max_new_tokens=20, ignore_eos=True))
    assert free.finish_reasons == ["length"] * len(prompts)
    assert free.response_lengths == [20] * len(prompts)
    stop_id = free.response_ids[2][4]
    batch = engine.generate(prompts, SamplingParams(temperature=0, max_new_tokens=20, ignore_eos=True, stop_token_ids=(stop_id,)))
    for got, full in zip(batch.response_ids, free.response_ids):
        cut = full.index(stop_id) + 1 if stop_id in full else len(full)
        assert got == full[:cut]
    assert batch.finish_reasons[2] == "stop" and batch.response_lengths[2] <= 5
    with_eos = engine.generate(prompts, SamplingParams(temperature=0, max_new_tokens=20))
    eos = tok.eos_token_id
    for got, full in zip(with_eos.response_ids, free.response_ids):
        assert got == (full[: full.index(eos) + 1] if eos in full else full)
    assert eos in sum(free.response_ids, [])  # the sharpened tiny model does emit eos


@pytest.mark.parametrize("fraction", [0.01, 1.0])
def test_dropping_finished_rows_changes_nothing(tiny_sharp, prompts, fraction):
    model, tok = tiny_sharp
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=24, seed=3)
    want = HFEngine(model, tok, decoder="generic").generate(prompts, params)
    got = HFEngine(model, tok, compact_fraction=fraction).generate(prompts, params)
    assert got.response_ids == want.response_ids and got.finish_reasons == want.finish_reasons
    assert (got.extra["compactions"] > 0) == (fraction < 1)
    assert "stop" in got.finish_reasons


def test_long_prompts_error_or_truncate_left(tiny_sharp, prompts):
    model, tok = tiny_sharp  # max_position_embeddings = 512
    engine = HFEngine(model, tok)
    long = (prompts[1] * 40)[:500]
    with pytest.raises(ValueError, match=r"prompt 1 has 500 tokens, more than the 492 allowed by the model's context of "
                                         r"512 tokens minus max_new_tokens=20.*truncate_prompt='left'"):
        engine.generate([prompts[0], long], SamplingParams(max_new_tokens=20))
    cut = engine.generate([long], SamplingParams(temperature=0, max_new_tokens=20, truncate_prompt="left"))
    assert cut.prompt_ids[0] == long[-492:]
    assert cut.response_ids == engine.generate([long[-492:]], SamplingParams(temperature=0, max_new_tokens=20)).response_ids
    with pytest.raises(ValueError, match="prompt 0 has 8 tokens, more than the 5 allowed by max_prompt_tokens=5"):
        engine.generate([prompts[0][:8]], SamplingParams(max_prompt_tokens=5))
    short = engine.generate([prompts[1]], SamplingParams(max_new_tokens=4, max_prompt_tokens=5, truncate_prompt="left"))
    assert short.prompt_ids[0] == prompts[1][-5:]
    with pytest.raises(ValueError, match="max_new_tokens=512 leaves no room for a prompt in the model's context of 512 tokens"):
        engine.generate([prompts[0]], SamplingParams(max_new_tokens=512))


def test_bad_prompts(tiny_sharp, prompts):
    model, tok = tiny_sharp
    engine = HFEngine(model, tok)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        engine.generate([prompts[0], []], SamplingParams())
    with pytest.raises(ValueError, match=rf"prompt 0 has token ids outside the vocabulary \[0, {len(tok)}\): \[500\]"):
        engine.generate([[1, 500]], SamplingParams())
    with pytest.raises(TypeError, match="list of token-id lists"):
        engine.generate(torch.tensor([prompts[0]]), SamplingParams())
    with pytest.raises(TypeError, match="params must be a SamplingParams"):
        engine.generate([prompts[0]], {"temperature": 0})
    assert engine.generate([], SamplingParams()).response_ids == []


def test_update_weights_and_training_mode(prompts):
    from rlvr.models.tiny import make_tiny_model
    from tests.rollout.conftest import sharpen

    model, tok = make_tiny_model(seed=0)
    sharpen(model, seed=1)
    other = sharpen(make_tiny_model(seed=0)[0], seed=2)
    engine = HFEngine(model, tok)
    params = SamplingParams(temperature=0, max_new_tokens=10)
    model.train()
    before = engine.generate(prompts, params).response_ids
    assert model.training  # restored after generation
    engine.update_weights(model)  # same object: nothing to do
    assert engine.generate(prompts, params).response_ids == before
    engine.update_weights(other.state_dict(), version=3)
    batch = engine.generate(prompts, params)
    after = batch.response_ids
    assert after != before and engine.model is model
    assert after == [hf_greedy(other, p, 10) for p in prompts]
    assert batch.policy_version == engine.policy_version == 3
    with pytest.raises(TypeError, match="torch.nn.Module, a state dict or"):
        engine.update_weights([1, 2])
    engine.update_weights(list(other.state_dict().items()), version=4)  # (name, tensor) pairs
    assert engine.policy_version == 4


def test_update_weights_from_another_module_copies_in_place(prompts):
    """An engine on its own copy of the weights: a push copies them, it never aliases the trainer's."""
    import copy

    from rlvr.models.tiny import make_tiny_model
    from tests.rollout.conftest import sharpen

    trainer_model, tok = make_tiny_model(seed=0)
    sharpen(trainer_model, seed=1)
    engine = HFEngine(copy.deepcopy(trainer_model), tok)
    probe = (prompts[0], [5, 6, 7])
    assert engine.logprobs(*probe) == pytest.approx(HFEngine(trainer_model, tok).logprobs(*probe), abs=1e-6)
    with torch.no_grad():
        for p in trainer_model.parameters():
            p.add_(0.1)
    stale = engine.logprobs(*probe)
    fresh = HFEngine(trainer_model, tok).logprobs(*probe)
    assert max(abs(a - b) for a, b in zip(stale, fresh)) > 1e-3
    engine.update_weights(trainer_model, version=1)
    assert engine.model is not trainer_model and engine.policy_version == 1
    assert engine.logprobs(*probe) == pytest.approx(fresh, abs=1e-6)


def test_prefill_in_groups_changes_nothing(tiny_sharp, prompts, monkeypatch):
    import rlvr.rollout.decoders as decoders

    model, tok = tiny_sharp
    params = SamplingParams(n=2, temperature=0.8, max_new_tokens=12, seed=4)
    whole = HFEngine(model, tok).generate(prompts, params)
    monkeypatch.setattr(decoders, "PREFILL_TOKENS", 40)  # one or two prompts per group
    calls = []
    real = decoders.LlamaDecoder._prefill_group
    monkeypatch.setattr(decoders.LlamaDecoder, "_prefill_group", lambda self, p, *a: calls.append(len(p)) or real(self, p, *a))
    grouped = HFEngine(model, tok).generate(prompts, params)
    assert len(calls) > 2 and sum(calls) == len(prompts)
    assert grouped.response_ids == whole.response_ids
    torch.testing.assert_close(torch.tensor(sum(grouped.sampler_logprobs, [])), torch.tensor(sum(whole.sampler_logprobs, [])))


def test_shared_prefix_prefill_changes_nothing(tiny_sharp, monkeypatch):
    import rlvr.rollout.decoders as decoders

    model, tok = tiny_sharp
    system = [{"role": "system", "content": "You are a careful assistant. Answer briefly."}]
    prompts = [tok.apply_chat_template(system + [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True)
               for q in ("hi", "What is 12+30?", "abc")]
    prompts = [list(p["input_ids"] if hasattr(p, "keys") else p) for p in prompts]
    prompts.append(prompts[0][:-1])  # a prompt that is a prefix of another: shared part stops one short
    calls = []
    real = decoders.LlamaDecoder._prefill_prefix
    monkeypatch.setattr(decoders.LlamaDecoder, "_prefill_prefix", lambda self, p, *a: calls.append(len(p)) or real(self, p, *a))
    greedy = HFEngine(model, tok).generate(prompts, SamplingParams(temperature=0, max_new_tokens=16))
    head = tok.apply_chat_template(system + [{"role": "user", "content": ""}], tokenize=False)
    head = head.removesuffix("<|im_end|>\n")  # up to where the user's text starts
    assert calls == [len(tok(head, add_special_tokens=False)["input_ids"])]
    for prompt, got in zip(prompts, greedy.response_ids):
        assert got == hf_greedy(model, prompt, 16)
    pair = HFEngine(model, tok).generate([prompts[0], prompts[3]], SamplingParams(temperature=0, max_new_tokens=16))
    assert calls[1] == len(prompts[3]) - 1  # one token of the shorter prompt is left to produce its logits
    assert pair.response_ids == greedy.response_ids[:1] + greedy.response_ids[3:]
    params = SamplingParams(n=2, temperature=0.9, max_new_tokens=12, seed=2)
    shared = HFEngine(model, tok).generate(prompts, params)
    monkeypatch.setattr(decoders, "MIN_SHARED_PREFIX", 10**9)
    plain = HFEngine(model, tok).generate(prompts, params)
    assert len(calls) == 3
    assert shared.response_ids == plain.response_ids
    torch.testing.assert_close(torch.tensor(sum(shared.sampler_logprobs, [])), torch.tensor(sum(plain.sampler_logprobs, [])))


def test_stream_offset_reproduces_a_slice_of_a_larger_call(tiny_sharp, prompts):
    """A data-parallel rank generating prompts [2, 5) with stream_offset = 2 * n draws the samples one
    process draws for those prompts in the whole call."""
    model, tok = tiny_sharp
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=8, seed=11)
    whole = HFEngine(model, tok).generate(prompts, params)
    part = HFEngine(model, tok).generate(prompts[2:], SamplingParams(n=3, temperature=1.0, max_new_tokens=8, seed=11,
                                                                     stream_offset=6))
    assert part.response_ids == whole.response_ids[6:]
    for got, want in zip(part.sampler_logprobs, whole.sampler_logprobs[6:]):
        assert got == pytest.approx(want, abs=1e-5)
