"""The core's boundary: every public core function names a missing (None) or mis-shaped tensor argument in
its error, and every function that takes a mask refuses a fractional one (a per-token weight is not a mask).

Guards against errors such as `'NoneType' object has no attribute 'detach'` from deep inside a function
(policy_loss(..., old_logprobs=None) once failed that way) and against masks that are weighed in a
denominator but not in the numerator (masked_mean([1, 3], [1, 0.5]) once returned 2.667)."""

from __future__ import annotations

import pytest
import torch

from rlvr.core.advantages import compute_advantages, outcome_to_token_rewards
from rlvr.core.aggregation import aggregate, batch_counts
from rlvr.core.entropy import entropy_from_logits
from rlvr.core.filtering import filter_logits_, keep_mask
from rlvr.core.importance import importance_weights
from rlvr.core.kl import kl_divergence
from rlvr.core.losses import covariance_selection, policy_loss, sft_loss, value_loss
from rlvr.core.masked import masked_mean, masked_sum, masked_var, masked_whiten
from rlvr.core.objective import rl_objective, value_objective
from rlvr.core.shaping import differential_smoothing, filter_groups, group_reward_std

N, T = 4, 3


def _lp():
    return -torch.rand(N, T) - 0.1


def _mask():
    return torch.tensor([[True, True, False]] * N)


# name -> (function, kwargs builder, the tensor arguments that are required)
CASES = {
    "masked_sum": (masked_sum, lambda: dict(values=torch.rand(N, T), mask=_mask()), ["values", "mask"]),
    "masked_mean": (masked_mean, lambda: dict(values=torch.rand(N, T), mask=_mask()), ["values", "mask"]),
    "masked_var": (masked_var, lambda: dict(values=torch.rand(N, T), mask=_mask()), ["values", "mask"]),
    "masked_whiten": (masked_whiten, lambda: dict(values=torch.rand(N, T), mask=_mask()), ["values", "mask"]),
    "aggregate": (aggregate, lambda: dict(per_token_loss=torch.rand(N, T), loss_mask=_mask(), mode="token_mean"),
                  ["per_token_loss", "loss_mask"]),
    "batch_counts": (batch_counts, lambda: dict(loss_mask=_mask()), ["loss_mask"]),
    "kl_divergence": (kl_divergence, lambda: dict(logprobs=_lp(), ref_logprobs=_lp(), estimator="k3"),
                      ["logprobs", "ref_logprobs"]),
    "policy_loss": (policy_loss, lambda: dict(name="ppo_clip", logprobs=_lp(), old_logprobs=_lp(),
                                              advantages=torch.randn(N, T), loss_mask=_mask()),
                    ["logprobs", "old_logprobs", "advantages", "loss_mask"]),
    "covariance_selection": (covariance_selection, lambda: dict(name="kl_cov", logprobs=_lp(), old_logprobs=_lp(),
                                                                advantages=torch.randn(N, T), loss_mask=_mask()),
                             ["logprobs", "old_logprobs", "advantages", "loss_mask"]),
    "value_loss": (value_loss, lambda: dict(values=torch.rand(N, T), old_values=torch.rand(N, T),
                                            returns=torch.rand(N, T), loss_mask=_mask()),
                   ["values", "old_values", "returns", "loss_mask"]),
    "sft_loss": (sft_loss, lambda: dict(logprobs=_lp(), loss_mask=_mask()), ["logprobs", "loss_mask"]),
    "rl_objective": (rl_objective, lambda: dict(logprobs=_lp(), loss_mask=_mask(), advantages=torch.randn(N, T)),
                     ["logprobs", "loss_mask", "advantages"]),
    "value_objective": (value_objective, lambda: dict(values=torch.rand(N, T), old_values=torch.rand(N, T),
                                                      returns=torch.rand(N, T), loss_mask=_mask()),
                        ["values", "old_values", "returns", "loss_mask"]),
    "importance_weights": (importance_weights, lambda: dict(old_logprobs=_lp(), sampler_logprobs=_lp(),
                                                            loss_mask=_mask()),
                           ["old_logprobs", "sampler_logprobs", "loss_mask"]),
    "compute_advantages": (compute_advantages, lambda: dict(estimator="grpo", rewards=torch.tensor([1., 0, 1, 0]),
                                                            loss_mask=_mask(), group_ids=torch.tensor([0, 0, 1, 1])),
                           ["rewards", "loss_mask", "group_ids"]),
    "outcome_to_token_rewards": (outcome_to_token_rewards, lambda: dict(rewards=torch.rand(N), loss_mask=_mask()),
                                 ["rewards", "loss_mask"]),
    "entropy_from_logits": (entropy_from_logits, lambda: dict(logits=torch.randn(N, 5)), ["logits"]),
    "keep_mask": (keep_mask, lambda: dict(scaled_logits=torch.randn(N, 5), top_k=2), ["scaled_logits"]),
    "filter_logits_": (filter_logits_, lambda: dict(logits=torch.randn(N, 5), temperature=1.0, top_k=2, top_p=1.0),
                       ["logits"]),
    "filter_groups": (filter_groups, lambda: dict(rewards=torch.rand(N), group_ids=torch.tensor([0, 0, 1, 1])),
                      ["rewards", "group_ids"]),
    "group_reward_std": (group_reward_std, lambda: dict(rewards=torch.rand(N), group_ids=torch.tensor([0, 0, 1, 1])),
                         ["rewards", "group_ids"]),
    "differential_smoothing": (differential_smoothing,
                               lambda: dict(advantages=torch.randn(N, T), loss_mask=_mask(),
                                            seq_logprobs=-torch.rand(N), correct=torch.tensor([True, False] * 2),
                                            gamma_p=0.1),
                               ["advantages", "loss_mask", "seq_logprobs", "correct"]),
}
PAIRS = [(name, arg) for name, (_, _, args) in CASES.items() for arg in args]


@pytest.mark.parametrize("name", sorted(CASES))
def test_valid_arguments_run(name):
    """The table's arguments are valid, so the None cases below fail on the None alone."""
    fn, build, _ = CASES[name]
    fn(**build())


@pytest.mark.parametrize(("name", "arg"), PAIRS)
def test_a_missing_argument_is_named(name, arg):
    fn, build, _ = CASES[name]
    kwargs = build()
    kwargs[arg] = None
    with pytest.raises((TypeError, ValueError), match=arg):
        fn(**kwargs)


ONE_TENSOR = ("entropy_from_logits", "keep_mask", "filter_logits_")  # any [..., V] is a valid shape


@pytest.mark.parametrize(("name", "arg"), [p for p in PAIRS if p[1] not in ("mask", "loss_mask", "group_ids",
                                                                               "correct", "rewards")
                                           and p[0] not in ONE_TENSOR])
def test_a_mis_shaped_argument_is_named(name, arg):
    fn, build, _ = CASES[name]
    kwargs = build()
    kwargs[arg] = kwargs[arg][:, :1] if kwargs[arg].dim() == 2 else kwargs[arg][:1]
    with pytest.raises(ValueError, match=arg):
        fn(**kwargs)


MASKED = [(name, arg) for name, arg in PAIRS if arg in ("mask", "loss_mask")]


@pytest.mark.parametrize(("name", "arg"), MASKED)
def test_a_fractional_mask_is_refused(name, arg):
    fn, build, _ = CASES[name]
    kwargs = build()
    kwargs[arg] = kwargs[arg].float() * 0.5
    with pytest.raises(ValueError, match=rf"{arg} must be boolean .* such as \[0\.5"):
        fn(**kwargs)


@pytest.mark.parametrize(("name", "arg"), MASKED)
def test_a_zero_one_float_mask_equals_the_bool_mask(name, arg):
    """A numeric mask of 0 and 1 is the bool mask: the same result, bit for bit."""
    fn, build, _ = CASES[name]
    torch.manual_seed(0)
    kwargs = build()
    torch.manual_seed(0)
    as_float = build()
    as_float[arg] = as_float[arg].float()
    want, got = fn(**kwargs), fn(**as_float)
    want, got = (want[0], got[0]) if isinstance(want, tuple) else (want, got)
    if isinstance(want, dict):
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    else:
        assert torch.equal(want, got)


def test_masked_mean_of_the_issue_example_is_refused_not_miscounted():
    with pytest.raises(ValueError, match="mask must be boolean"):
        masked_mean(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 0.5]))
    assert masked_mean(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 0.0])).item() == 1.0
