"""Which KL each placement's gradient follows, checked exactly by enumerating every response of a tiny model."""

from __future__ import annotations

import pytest
import torch

from rlvr.compare.kl_placement import all_responses, kl_gradient_agreement, perturbed_copy, token_logprobs
from rlvr.models.tiny import make_tiny_model


@pytest.fixture(scope="module")
def pair():
    reference, tokenizer = make_tiny_model(seed=0, chars="abc")
    vocab = tokenizer.convert_tokens_to_ids(["a", "b", "c"])
    prompt = tokenizer.convert_tokens_to_ids(["<|im_start|>", "a"])
    return reference, perturbed_copy(reference, 10.0, seed=1), prompt, vocab


def test_the_listed_responses_are_the_whole_distribution(pair):
    reference, policy, prompt, vocab = pair
    responses = all_responses(vocab, 3)
    assert responses.shape == (27, 3) and len({tuple(r) for r in responses.tolist()}) == 27
    with torch.no_grad():
        logp, dist = token_logprobs(policy, prompt, responses, vocab)
    assert float(logp.sum(-1).exp().sum()) == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(dist.exp().sum(-1), torch.ones(27, 3), atol=1e-5)


def test_each_placement_follows_the_kl_theory_says(pair):
    """k1 in the reward: the sequence-level reverse KL; k2 in the loss: the per-token reverse KL at the visited
    states; k3 in the loss (GRPO): the per-token forward KL. Exact expectations: cosines of 1 to 1e-6."""
    reference, policy, prompt, vocab = pair
    r = kl_gradient_agreement(policy, reference, prompt, vocab, 3, batches=2, samples=4)
    p = r["placements"]
    assert r["kl_reverse"] > 0.5 and r["kl_forward"] > 0.5  # far enough apart for the gradients to differ
    assert p["k1 in the reward"]["cos_expected_to_reverse"] == pytest.approx(1.0, abs=1e-6)
    assert p["k1 in the reward"]["norm_ratio_to_reverse"] == pytest.approx(1.0, abs=1e-5)
    assert p["k2 in the loss"]["cos_expected_to_token_reverse"] == pytest.approx(1.0, abs=1e-6)
    assert p["k3 in the loss"]["cos_expected_to_token_forward"] == pytest.approx(1.0, abs=1e-6)
    # and they are different directions: k3's expected gradient is not the reverse KL's
    assert p["k3 in the loss"]["cos_expected_to_reverse"] < 0.99
    assert p["k2 in the loss"]["cos_expected_to_reverse"] < 1 - 1e-4
    for stats in p.values():
        assert stats["trace_cov"]["mean"] >= 0 and -1 <= stats["batch_cos_to_reverse"]["mean"] <= 1
