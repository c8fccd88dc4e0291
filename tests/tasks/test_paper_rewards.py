"""The rewards the paper recipes promise, as the tasks wire them: Logic-RL's knights and knaves (whole
answer tag, Logic-RL's format rule), DAPO's math reward, TinyZero's countdown answer check."""

import json

import pytest

from rlvr.config import load_recipe, resolve
from rlvr.rewards import REWARDS
from rlvr.rewards.format import format_reward, logic_rl_format_reward
from rlvr.tasks import Example, get_task
from rlvr.tasks.build import build_task

GOLD = {"Zoey": True, "Ethan": False}
KK = Example(id="kk", question="q", answer=GOLD)
LOGIC_RL = "<think>Zoey tells the truth.</think>\n<answer>\n(1) Zoey is a knight\n(2) Ethan is a knave\n</answer>"
REASONING_GYM = "<think>Zoey tells the truth.</think>\n<answer>Zoey is a knight, and Ethan is a knave.</answer>"


def kk_task(**options):
    return get_task("knights_knaves", n_people=2, answer_in_tags=True, format_weight=0.714, template="chat", **options)


@pytest.mark.parametrize("response", [LOGIC_RL, REASONING_GYM])
def test_answer_in_tags_reads_every_line_of_the_tag(response):
    """Logic-RL's one-person-per-line answer used to score 0.714 (only the tag's last line was read)."""
    result = kk_task().score(response, KK)
    assert result.correct and result.reward == pytest.approx(1.714)
    assert kk_task().extract_answer(response) == (("ethan", False), ("zoey", True))
    wrong = response.replace("Ethan is a knave", "Ethan is a knight")
    assert not kk_task().score(wrong, KK).correct


def test_answer_in_tags_still_needs_a_tag():
    assert kk_task().score("Zoey is a knight, and Ethan is a knave.", KK).reward == 0.0
    untagged = get_task("knights_knaves", n_people=2, template="chat")  # no tags: the last line
    assert untagged.score("If Zoey lies...\nZoey is a knight, and Ethan is a knave.", KK).correct


def test_logic_rl_format_rule_for_the_knights_and_knaves_task():
    """format_rule="logic_rl": text before <think> and an end-of-turn token after </answer> keep the format score."""
    response = "Let me work it out. " + LOGIC_RL + "<|im_end|>"
    logic_rl = kk_task(format_rule="logic_rl").score(response, KK)
    assert logic_rl.components == {"answer": 1.0, "format": 1.0} and logic_rl.reward == pytest.approx(1.714)
    strict = kk_task().score(response, KK)  # the default rule is rlvr's strict R1 rule
    assert strict.components == {"answer": 1.0, "format": 0.0}
    assert kk_task(format_rule="logic_rl").reward.components["format"][0] is logic_rl_format_reward
    assert kk_task().reward.components["format"][0] is format_reward
    with pytest.raises(ValueError, match="format_rule"):
        kk_task(format_rule="strict")


def test_dataset_task_reads_the_whole_knights_knaves_tag(tmp_path):
    rows = [{"question": "Who is who?", "answer": "Zoey is a knight, and Ethan is a knave."}]
    path = tmp_path / "kk.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows * 20))
    task = get_task("jsonl", path=str(path), reward="knights_knaves", answer_in_tags=True, test_fraction=0.5)
    ex = Example(id="d", question="q", answer=rows[0]["answer"])
    assert task.score(LOGIC_RL, ex).correct
    assert task.extract_answer(LOGIC_RL) == (("ethan", False), ("zoey", True))
    untagged = get_task("jsonl", path=str(path), reward="knights_knaves", test_fraction=0.5)
    assert untagged.score("I think...\nZoey is a knight, and Ethan is a knave.", ex).correct


def test_dapo_reward_in_a_dataset_task_and_its_vote(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps({"question": f"q{i}", "answer": "142"}) + "\n" for i in range(20)))
    task = get_task("jsonl", path=str(path), reward="math_dapo")
    ex = Example(id="m", question="q", answer="142")
    right = task.score("100 + 42\nAnswer: 142\nThis took 3 steps.", ex)
    wrong = task.score("100 + 42 = 142", ex)
    assert (right.reward, right.correct) == (1.0, True)
    assert (wrong.reward, wrong.correct) == (-1.0, False)
    assert task.extract_answer("Answer: 1,42") == task.extract_answer("Answer: 142") == "142"
    assert task.extract_answer("142") is None


def test_arithmetic_task_with_dapos_reward():
    task = get_task("arithmetic", answer_from="math_dapo")
    ex = Example(id="a", question="What is 3 + 5?", answer=8)
    assert task.score("3 + 5 = 8\nAnswer: 8", ex).reward == 1.0
    assert task.score("3 + 5 = 8", ex).reward == -1.0
    assert task.extract_answer("Answer: 8") == "8"


def test_countdown_task_checks_the_stated_value_and_does_not_vote_for_a_false_one():
    task = get_task("countdown", use_all=True, format_weight=0.1, template="r1_zero")
    ex = Example(id="c", question="q", answer={"numbers": [2, 5, 7, 4], "target": 280})
    assert task.score("<think>t</think><answer>2 * 5 * 7 * 4 = 280</answer>", ex).reward == pytest.approx(1.1)
    wrong = task.score("<think>t</think><answer>2 * 5 * 7 * 4 = 281</answer>", ex)
    assert not wrong.correct and wrong.reward == pytest.approx(0.1)
    assert task.extract_answer("<answer>2 * 5 * 7 * 4 = 281</answer>") is None


@pytest.mark.parametrize("recipe", ["dapo", "dapo_cpu"])
def test_dapo_recipes_use_dapos_reward(recipe):
    cfg = resolve(load_recipe(recipe))
    kwargs = cfg.task.kwargs
    assert kwargs.get("reward") == "math_dapo" or kwargs.get("answer_from") == "math_dapo"
    task = build_task(cfg.task)
    ex = Example(id="x", question="q", answer="142" if recipe == "dapo" else 142)
    assert task.score("Answer: 142\nThis took 3 steps.", ex).reward == 1.0
    assert task.score("so it is 142", ex).reward == -1.0
    assert "math_dapo" in REWARDS


@pytest.mark.parametrize("recipe", ["logic_rl_knights_knaves", "logic_rl_knights_knaves_cpu"])
def test_logic_rl_recipes_use_logic_rls_format_rule_and_read_the_whole_tag(recipe):
    cfg = resolve(load_recipe(recipe))
    assert cfg.task.kwargs["format_rule"] == "logic_rl" and cfg.task.kwargs["answer_in_tags"]
    task = build_task(cfg.task)
    result = task.score("Let me see. " + LOGIC_RL + "<|im_end|>", KK)
    assert result.components == {"answer": 1.0, "format": 1.0}
