"""The packed forward (each distinct prompt once, responses without padding) computes the same log-probs,
entropies and gradients as the padded forward, on every architecture it claims."""

from __future__ import annotations

import itertools

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

from rlvr.models.llama import length_buckets, packed_path_problem
from rlvr.models.logprobs import response_logprobs
from rlvr.models.tiny import make_tiny_model
from tests.rollout.test_architectures import COMMON


def group_batch(vocab: int, prompt_lens: list[int], group: int, response_lens: list[int], shared: int = 0, seed: int = 0):
    """Prompts of the given lengths (their first `shared` tokens the same: a system message), each repeated
    `group` times (an RL group), left-padded; responses of `response_lens` (one per row) right-padded."""
    g = torch.Generator().manual_seed(seed)
    prefix = torch.randint(4, vocab, (shared,), generator=g)
    prompts = [torch.cat((prefix, torch.randint(4, vocab, (p - shared,), generator=g))) for p in prompt_lens]
    rows = [prompts[i // group] for i in range(len(prompt_lens) * group)]
    assert len(rows) == len(response_lens)
    P, T = max(prompt_lens), max(response_lens)
    ids = torch.zeros(len(rows), P + T, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, (p, r) in enumerate(zip(rows, response_lens)):
        ids[i, P - len(p) : P] = p
        ids[i, P : P + r] = torch.randint(4, vocab, (r,), generator=g)
        mask[i, P - len(p) : P + r] = 1
    return ids, mask, T


def _models():
    def build(cls, config):
        torch.manual_seed(0)
        model = cls(config)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("bias"):  # qwen2's q/k/v biases must matter
                    p.normal_(0.0, 0.3)
        return model

    return {
        "tiny-llama": lambda: make_tiny_model(seed=0)[0],
        "qwen2": lambda: build(Qwen2ForCausalLM, Qwen2Config(**COMMON)),
        "qwen3": lambda: build(Qwen3ForCausalLM, Qwen3Config(head_dim=16, **COMMON)),
    }


BATCHES = {
    # 3 prompts x 4 samples, responses of mixed lengths (one of a single token)
    "groups": ([5, 9, 3], 4, [6, 1, 4, 6, 2, 7, 7, 3, 5, 1, 2, 4]),
    # every row its own prompt, one row without any response token
    "distinct": ([4, 2, 6, 6], 1, [3, 0, 5, 2]),
    # one prompt for all rows; no response longer than 1 (nothing but the prompt runs)
    "single-token": ([7], 3, [1, 1, 1]),
    # a 9-token prefix common to all prompts (run once), suffixes of 1 to 6 tokens, groups of 2
    "system-prefix": ([12, 10, 15, 10], 2, [4, 6, 1, 3, 5, 5, 2, 3], 9),
    # lengths far apart, interleaved across rows: the response attention runs in several length buckets
    "length-buckets": ([6, 4], 6, [2, 30, 1, 16, 31, 3, 17, 2, 29, 15, 4, 30], 3),
}


@pytest.mark.parametrize("arch", list(_models()))
@pytest.mark.parametrize("batch", list(BATCHES))
def test_values_and_gradients_equal_the_padded_forward(arch, batch):
    model = _models()[arch]()
    model.train()  # no dropout in these configs; train mode must not change the path
    ids, mask, T = group_batch(model.config.vocab_size, *BATCHES[batch])
    assert packed_path_problem(model, mask, T) is None
    weights = torch.randn(ids.shape[0], T, generator=torch.Generator().manual_seed(5))
    out = {}
    for packed in (True, False):
        model.zero_grad(set_to_none=True)
        lp, ent = response_logprobs(model, ids, mask, T, temperature=0.7, return_entropy=True, packed=packed)
        loss = (lp * weights).sum() + 0.3 * ent.sum()
        loss.backward()
        out[packed] = (lp.detach(), ent.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    (lp1, ent1, g1), (lp0, ent0, g0) = out[True], out[False]
    counted = mask[:, -T:].bool()
    torch.testing.assert_close(lp1, lp0, atol=2e-5, rtol=0)
    torch.testing.assert_close(ent1, ent0, atol=2e-5, rtol=0)
    assert (lp1[~counted] == 0).all() and (ent1[~counted] == 0).all()
    assert g1.keys() == g0.keys()
    for name in g0:
        scale = g0[name].abs().max().clamp(min=1e-3)
        assert (g1[name] - g0[name]).abs().max() <= 1e-4 * scale, name


def test_the_check_can_fail():
    """A wrong position (the packed path's main risk) changes the log-probs beyond the tolerance."""
    model = make_tiny_model(seed=0)[0]
    ids, mask, T = group_batch(model.config.vocab_size, *BATCHES["groups"])
    with torch.no_grad():
        lp0, _ = response_logprobs(model, ids, mask, T, packed=False)
        shifted = mask.clone()
        shifted[0, 0 : ids.shape[1] - T] = 1  # row 0: the padding counts as prompt, shifting its positions
        lp1, _ = response_logprobs(model, ids, shifted, T, packed=True)
    assert (lp1[0] - lp0[0]).abs().max() > 1e-3
    torch.testing.assert_close(lp1[1:], lp0[1:], atol=2e-5, rtol=0)


def test_packed_is_refused_where_it_cannot_run():
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=87, n_embd=32, n_layer=1, n_head=2))
    ids, mask, T = group_batch(87, [3, 5], 2, [2, 3, 1, 2])
    with pytest.raises(ValueError, match="packed=True but .*model_type 'gpt2'"):
        response_logprobs(gpt2, ids, mask, T, packed=True)
    with torch.no_grad():  # auto: falls back to the padded forward
        lp, _ = response_logprobs(gpt2, ids, mask, T)
    assert lp.shape == (4, T)

    model = make_tiny_model(seed=0)[0]
    holed = mask.clone()
    P = ids.shape[1] - T
    holed[0, P - 3 : P] = torch.tensor([1, 0, 1])  # a prompt with a hole is not left-padded
    assert packed_path_problem(model, holed, T) == "a prompt is not left-padded (its attention_mask has a 0 after a 1)"
    model.config.attention_dropout = 0.1
    model.train()
    assert packed_path_problem(model, mask, T) == "attention dropout is on"
    model.eval()
    assert packed_path_problem(model, mask, T) is None


def _area(groups, keys_before):
    return sum(len(rows) * t * (keys_before + t) for rows, t in groups)


def test_length_buckets_group_similar_lengths_with_the_least_padded_area():
    # by hand: one group pads four rows to 10 (4 x 10 x 10 = 400); two give 2 x 1 x 1 + 2 x 10 x 10 = 202
    assert length_buckets([10, 1, 10, 1], 0, max_buckets=1) == [([0, 1, 2, 3], 10)]
    assert length_buckets([10, 1, 10, 1], 0) == [([1, 3], 1), ([0, 2], 10)]
    assert length_buckets([4, 4, 4], 7) == [([0, 1, 2], 4)]  # nothing to gain: one group
    assert length_buckets([], 5) == []
    # "length-buckets" above: more than one bucket, each row once, every row within its bucket's length
    lengths = [r - 1 for r in BATCHES["length-buckets"][2]]
    groups = length_buckets(lengths, 3)
    assert len(groups) > 1
    assert sorted(r for rows, _ in groups for r in rows) == list(range(len(lengths)))
    assert all(lengths[r] <= t for rows, t in groups for r in rows)


@pytest.mark.parametrize("seed", range(6))
def test_length_buckets_are_the_best_of_all_contiguous_splits(seed):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, 40, (9,), generator=g).tolist()
    keys, srt = 11, sorted(lengths)
    best = min(
        sum((j - i) * srt[j - 1] * (keys + srt[j - 1]) for i, j in zip((0, *cuts), (*cuts, len(srt))))
        for k in range(4) for cuts in itertools.combinations(range(1, len(srt)), k)
    )
    groups = length_buckets(lengths, keys)
    assert len(groups) <= 4 and _area(groups, keys) == best
    # with the quantile candidates (fewer cut points than distinct lengths) still a valid, no worse than one group
    coarse = length_buckets(lengths, keys, max_cuts=3)
    assert sorted(r for rows, _ in coarse for r in rows) == list(range(9))
    assert _area(coarse, keys) <= len(srt) * srt[-1] * (keys + srt[-1])
