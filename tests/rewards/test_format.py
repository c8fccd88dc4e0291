import pytest

from rlvr.rewards import REWARDS, extract_answer_tag, format_reward
from rlvr.rewards.format import logic_rl_format_reward


@pytest.mark.parametrize(
    "response",
    [
        "<think>3 + 5 = 8</think><answer>8</answer>",
        "<think>\nmulti\nline\n</think>\n<answer>\n8\n</answer>\n",
        "  <think></think> <answer></answer>",
    ],
)
def test_well_formed(response):
    assert format_reward(response) == 1.0


@pytest.mark.parametrize(
    "response",
    [
        "8",
        "<answer>8</answer>",  # no thinking
        "<think>a</think>",  # no answer
        "<answer>8</answer><think>a</think>",  # wrong order
        "<think>a</think><answer>8</answer> and more text",  # trailing text
        "preamble <think>a</think><answer>8</answer>",  # leading text
        "<think>a <answer>7</answer></think><answer>8</answer>",  # a second answer hidden in the thinking
        "<think>a</think><think>b</think><answer>8</answer>",
        "<think>a</think><answer>8</answer></answer>",
    ],
)
def test_malformed(response):
    assert format_reward(response) == 0.0


def test_think_prefilled():
    assert format_reward("reasoning</think>\n<answer>8</answer>", think_prefilled=True) == 1.0
    # With a pre-filled <think>, a response that opens another one is malformed, and vice versa.
    assert format_reward("<think>reasoning</think><answer>8</answer>", think_prefilled=True) == 0.0
    assert format_reward("reasoning</think><answer>8</answer>") == 0.0
    assert REWARDS["format_think_prefilled"]("r</think><answer>8</answer>", None) == 1.0


def test_extract_answer_tag_takes_the_last():
    assert extract_answer_tag("<answer> 7 </answer> then <answer>8</answer>") == "8"
    assert extract_answer_tag("<answer>\n(1 + 2) * 3\n</answer>") == "(1 + 2) * 3"
    assert extract_answer_tag("<answer>unclosed") is None
    assert extract_answer_tag("") is None


@pytest.mark.parametrize(
    "response",
    [
        "<think>a</think><answer>8</answer>",
        "Let me think. <think>a</think><answer>8</answer>",  # text before <think>
        "<think>a</think> So the answer is: <answer>8</answer>",  # text between the blocks
        "<think>a</think><answer>8</answer><|im_end|>",  # an end-of-turn token after </answer>
        "<think>a</think><answer>8</answer> Hope that helps.",
    ],
)
def test_logic_rl_rule_allows_text_around_the_tags(response):
    """Logic-RL's published rule (kk.py): the four tags once each, in order; nothing else is checked."""
    assert logic_rl_format_reward(response) == 1.0
    assert REWARDS["format_logic_rl"](response, None) == 1.0
    if response != "<think>a</think><answer>8</answer>":
        assert format_reward(response) == 0.0  # rlvr's default rule stays strict


@pytest.mark.parametrize(
    "response",
    [
        "8",
        "<answer>8</answer>",
        "<think>a</think>",
        "<answer>8</answer><think>a</think>",  # wrong order
        "<think>a</think><answer>8</answer><answer>9</answer>",  # a tag twice
        "<think>a <answer>7</answer></think><answer>8</answer>",
        "</think><think>a<answer>8</answer>",  # </think> before <think>
        "<think>a</answer></think><answer>8",  # </answer> before <answer>
    ],
)
def test_logic_rl_rule_rejects(response):
    assert logic_rl_format_reward(response) == 0.0


def test_logic_rl_rule_with_think_prefilled():
    assert logic_rl_format_reward("reasoning</think> then <answer>8</answer><|im_end|>", think_prefilled=True) == 1.0
    assert logic_rl_format_reward("<think>reasoning</think><answer>8</answer>", think_prefilled=True) == 0.0
    assert REWARDS["format_logic_rl_think_prefilled"]("r</think><answer>8</answer>", None) == 1.0
