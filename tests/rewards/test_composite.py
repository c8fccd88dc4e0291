import pytest

from rlvr.rewards import REWARDS, CompositeReward, RewardResult, format_reward, gsm8k_reward, symbol_reward


def test_weighted_sum_and_components():
    reward = CompositeReward({"answer": (gsm8k_reward, 2.0), "format": (format_reward, 0.5)})
    good = "<think>4 + 4</think><answer>8</answer>"
    assert reward(good, "8") == RewardResult(2.5, True, {"answer": 1.0, "format": 1.0})
    assert reward("<think>4 + 4</think><answer>9</answer>", "8") == RewardResult(0.5, False, {"answer": 0.0, "format": 1.0})
    # Right answer without the format: correct (pass@k counts answers), lower reward.
    assert reward("8", "8") == RewardResult(2.0, True, {"answer": 1.0, "format": 0.0})


def test_negative_weights_and_affine_scales():
    # Logic-RL-like: a wrong format costs 1.
    reward = CompositeReward({"answer": (gsm8k_reward, 2.0), "format": (format_reward, 1.0), "bias": (lambda r: -1.0, 1.0)})
    assert reward("8", "8").reward == 2.0 + 0.0 - 1.0


def test_correct_from_and_result_components():
    dense = CompositeReward({"sym": (lambda r, a: symbol_reward(r, a, max_len=4), 1.0)})
    result = dense("bbx", "b")
    assert result.reward == 0.5 and result.correct and result.components == {"sym": 0.5}
    partial = CompositeReward({"answer": (lambda r, a: 0.99, 1.0)})
    assert not partial("x", None).correct  # correct needs full credit
    assert CompositeReward({"a": (format_reward, 1.0), "b": (format_reward, 1.0)}, correct_from="b")("x").components == {"a": 0.0, "b": 0.0}


@pytest.mark.parametrize(
    "components, kwargs, message",
    [
        ({}, {}, "at least one component"),
        ({"answer": gsm8k_reward}, {}, "must be a \\(fn, weight\\) pair"),
        ({"a": (gsm8k_reward, 1.0), "b": (format_reward, 1.0)}, {}, "correct_from=None must name a component"),
        ({"answer": (gsm8k_reward, 1.0)}, {"correct_from": "anser"}, "must name a component; components: answer"),
    ],
)
def test_errors(components, kwargs, message):
    with pytest.raises(ValueError, match=message):
        CompositeReward(components, **kwargs)


REGISTRY_CASES = {
    "math": ("\\boxed{4}", "4"),
    "gsm8k": ("#### 4", "4"),
    "last_number": ("it is 4", 4),
    "exact": (" 4 ", "4"),
    "countdown": ("<answer>2 * 2</answer>", {"numbers": [2, 2], "target": 4}),
    "knights_knaves": ("A is a knight", {"A": True}),
    "format": ("<think>x</think><answer>4</answer>", None),
    "format_think_prefilled": ("x</think><answer>4</answer>", None),
    "symbol": ("bbbbbbbb", "b"),
    "choice": ("The answer is (B).", "B"),
    "code": ("```python\ndef f():\n    return 4\n```", ["assert f() == 4"]),
    "math_dapo": ("2 + 2\nAnswer: 4", "4"),
    "math_dapo_strict_box": ("so \\boxed{4}", "4"),
    "format_logic_rl": ("<think>x</think><answer>4</answer><|im_end|>", None),
    "format_logic_rl_think_prefilled": ("x</think><answer>4</answer>", None),
}
WRONG_SCORE = {"math_dapo": -1.0, "math_dapo_strict_box": -1.0}  # DAPO's scale is +1 / -1


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_every_registered_reward_scores_a_right_and_a_wrong_answer(name):
    assert set(REWARDS) == set(REGISTRY_CASES), "add a case for each registered reward"
    response, answer = REGISTRY_CASES[name]

    def value(out):
        return out.reward if isinstance(out, RewardResult) else out

    assert value(REWARDS[name](response, answer)) == 1.0
    assert value(REWARDS[name]("nothing useful", answer)) == WRONG_SCORE.get(name, 0.0)


def test_unknown_reward_name():
    with pytest.raises(KeyError, match="unknown reward 'gsm8'.*did you mean 'gsm8k'"):
        REWARDS["gsm8"]
