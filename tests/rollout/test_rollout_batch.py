"""The rollout data model (rlvr.rollout.RolloutBatch): explicit per-sample fields, select, concat, tensors; and
the one scoring function of training and evaluation (rlvr.eval.scoring.score_rollouts)."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.eval.scoring import RewardErrors, score_rollouts
from rlvr.rewards.base import RewardResult
from rlvr.rollout.base import RolloutBatch


def batch(groups=2, n=2, version=3) -> RolloutBatch:
    rows = groups * n
    return RolloutBatch(
        prompt_index=[s // n for s in range(rows)], prompt_ids=[[1, 2 + s // n] for s in range(rows)],
        response_ids=[[10 + s] * (1 + s % 2) for s in range(rows)],
        sampler_logprobs=[[-0.5] * (1 + s % 2) for s in range(rows)], finish_reasons=["stop", "length"] * (rows // 2),
        response_lengths=[1 + s % 2 for s in range(rows)], num_generated_tokens=sum(1 + s % 2 for s in range(rows)),
        policy_version=version, examples=[f"ex{g}" for g in range(groups)], texts=[f"t{s}" for s in range(rows)],
        rewards=[float(s) for s in range(rows)], correct=[s % 2 == 0 for s in range(rows)],
        reward_components={"format": [0.5 * s for s in range(rows)]},
    )


def test_every_per_sample_field_is_selected_and_the_groups_renumbered():
    b = batch(groups=3)
    part = b.select_groups([2, 0])
    assert part.prompt_index == [0, 0, 1, 1]
    assert part.examples == ["ex2", "ex0"]
    assert part.rewards == [4.0, 5.0, 0.0, 1.0]
    assert part.texts == ["t4", "t5", "t0", "t1"]
    assert part.correct == [True, False, True, False]
    assert part.reward_components == {"format": [2.0, 2.5, 0.0, 0.5]}
    assert part.policy_versions == [3, 3, 3, 3]
    assert part.num_generated_tokens == sum(part.response_lengths) == 6


def test_concat_shifts_the_groups_and_keeps_each_samples_policy_version():
    a, b = batch(groups=2, version=3), batch(groups=1, version=5)
    b.reward_components = {}  # a part without a component: 0 for its samples
    whole = RolloutBatch.concat([a, b])
    assert whole.prompt_index == [0, 0, 1, 1, 2, 2]
    assert whole.examples == ["ex0", "ex1", "ex0"]
    assert whole.policy_versions == [3, 3, 3, 3, 5, 5]
    assert whole.policy_version == 3  # the oldest
    assert whole.reward_components["format"] == [0.0, 0.5, 1.0, 1.5, 0.0, 0.0]
    assert len(whole) == 6 and whole.num_generated_tokens == a.num_generated_tokens + b.num_generated_tokens
    assert whole.select(list(range(4, 6))).rewards == b.rewards


def test_token_masks_keep_tool_tokens_out_of_the_loss_mask():
    b = batch(groups=1)
    t = b.to_tensors(pad_token_id=0)
    assert t["loss_mask"].tolist() == [[True, False], [True, True]]
    b.token_masks = [[True], [False, True]]  # sample 1's first token came from a tool
    assert b.to_tensors(0)["loss_mask"].tolist() == [[True, False], [False, True]]


class Task:
    def score(self, text, example):
        if text == "boom":
            raise ValueError("reward crashed")
        if text == "nan":
            return RewardResult(math.nan, False)
        return RewardResult(1.0 if text == example else 0.0, text == example, {"match": float(text == example)})


class Tokenizer:
    words = {1: "a", 2: "b", 3: "boom", 4: "nan"}

    def batch_decode(self, ids, skip_special_tokens=True):
        return [" ".join(self.words[i] for i in row) for row in ids]


def raw(responses):
    return RolloutBatch(prompt_index=[0] * len(responses), prompt_ids=[[9]] * len(responses), response_ids=responses,
                        sampler_logprobs=[[0.0] * len(r) for r in responses], finish_reasons=["stop"] * len(responses),
                        response_lengths=[len(r) for r in responses])


def test_training_contains_a_failing_reward_and_counts_it():
    errors = RewardErrors(log=lambda message: None)
    scored = score_rollouts(raw([[1], [3], [4], [2]]), ["a"], Task(), Tokenizer(),
                            on_error=lambda exc, row, example: errors.record(exc))
    assert scored.texts == ["a", "boom", "nan", "b"]
    assert scored.rewards == [1.0, 0.0, 0.0, 0.0] and scored.correct == [True, False, False, False]
    assert scored.reward_components == {"match": [1.0, 0.0, 0.0, 0.0]}
    assert errors.count == 2  # the raise and the non-finite reward
    assert torch.equal(scored.reward_tensor(), torch.tensor([1.0, 0.0, 0.0, 0.0]))


def test_evaluation_names_the_problem_of_a_failing_reward():
    class Example(str):
        id = "p7"

    with pytest.raises(RuntimeError, match=r"scoring problem 'p7' \(sample 1\) failed: ValueError: reward crashed"):
        score_rollouts(raw([[1], [3]]), [Example("a")], Task(), Tokenizer())
