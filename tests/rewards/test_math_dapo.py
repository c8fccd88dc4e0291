"""DAPO's reward (rlvr.rewards.math_dapo): verl's math_dapo.py rule, +1 right / -1 wrong.

Every expected value below is what verl's `math_dapo.compute_score` returns for the same input.
"""

import pytest

from rlvr.rewards import REWARDS, extract_dapo_answer, last_number_reward, math_dapo_reward, normalize_dapo_answer
from rlvr.rewards.math_dapo import last_boxed_content


def test_the_value_after_the_last_answer_line_is_read_not_the_last_number():
    """DAPO reads the line after "Answer:", so text after it does not matter (last_number says wrong)."""
    response = "First 100 + 42 = 142.\nAnswer: 142\nThis took 3 steps."
    assert math_dapo_reward(response, "142") == 1.0
    assert last_number_reward(response, "142") == 0.0  # the reward dapo.yaml used to name
    assert math_dapo_reward("Answer: 7\nno wait\nAnswer: 142", "142") == 1.0  # the last one counts
    assert math_dapo_reward("Answer: 142\nno wait\nAnswer: 7", "142") == -1.0


@pytest.mark.parametrize(
    "response",
    [
        "so the total is 12",  # no "Answer:" line
        "The answer is 12.",  # "answer is", not "answer:"
        "Answer: wrong or 12",
        "Answer: 12%",
        "Answer: 12 apples",  # only the listed unit words are removed
        "Answer: 12 because we first comp",  # cut off mid-line after the value
        "Answer: 12.",  # a final period stays (only ".$" becomes "$")
        "Answer: 12\n" + "x" * 300,  # the "Answer:" line is not in the last 300 characters
    ],
)
def test_what_last_number_accepts_and_dapo_rejects(response):
    """Each response has 12 as its last number but is wrong for DAPO."""
    assert last_number_reward(response, "12") == 1.0
    assert math_dapo_reward(response, "12") == -1.0


@pytest.mark.parametrize(
    "response, gold",
    [
        ("Answer: 12", "12"),
        ("answer:12", "12"),  # any case, no space needed
        ("Final Answer: 12", "12"),
        ("Answer:\n12", "12"),  # the spaces after the colon may include a line break
        ("Answer: $12$", "12"),
        ("Answer: \\boxed{12}", "12"),
        ("Answer: x = 12", "12"),  # what follows the last "="
        ("Answer: 1,000", "1000"),
        ("Answer: 12 dollars", "12"),  # a listed unit word
        ("Answer: 4 units", "4"),
        ("Answer: 90^\\circ", "90"),
        ("Answer: \\frac12", "\\frac{1}{2}"),  # shorthand TeX
        ("Answer: \\text{(A)}", "(A)"),
        ("Answer: a 7", "7"),  # "a " is deleted
        ("Answer: 12", 12),  # an integer gold is compared as its text
    ],
)
def test_normalised_matches(response, gold):
    assert math_dapo_reward(response, gold) == 1.0
    assert REWARDS["math_dapo"](response, gold) == 1.0


@pytest.mark.parametrize(
    "response, gold",
    [
        ("Answer: 0.5", "\\frac{1}{2}"),  # string match only, no value comparison
        ("Answer: 12.0", "12"),
        ("Answer: 4 squares", "4"),  # "square" is deleted inside the word: "4s"
        ("Answer: 25", "25\\%"),  # "\\%" is not removed
    ],
)
def test_strings_that_differ_are_wrong(response, gold):
    assert math_dapo_reward(response, gold) == -1.0


def test_normalisation_steps():
    assert normalize_dapo_answer("x = 1,000") == "1000"
    assert normalize_dapo_answer("1,2") == "12"  # digits and commas only: the commas go
    assert normalize_dapo_answer("(1,2)") == "(1,2)"
    assert normalize_dapo_answer("see $\\frac{1}{2}$ here $3$") == "\\frac{1}{2}"  # the first $...$ span
    assert normalize_dapo_answer("\\textbf{5} \\mbox{cm}") == "5"
    assert normalize_dapo_answer("\\sqrt2") == "\\sqrt{2}"
    assert normalize_dapo_answer("(3,\\text{and}4)") == "(3,4)"
    assert normalize_dapo_answer("3,\\text{and}4") == "34"  # "3,4" is digits and commas: the comma goes too


def test_extract_dapo_answer():
    assert extract_dapo_answer("...\nAnswer: 12 apples\n") == "12apples"
    assert extract_dapo_answer("no marker") is None
    assert extract_dapo_answer("Answer: 9" + " " * 295) is None  # outside the last 300 characters


def test_strict_box_mode():
    """verl's strict_box_verify: the last closed \\boxed{} of the last 100 characters, compared unnormalised."""
    assert math_dapo_reward("so \\boxed{12}", "12", strict_box=True) == 1.0
    assert REWARDS["math_dapo_strict_box"]("so \\boxed{12}", "12") == 1.0
    assert math_dapo_reward("so \\boxed{12 }", "12", strict_box=True) == -1.0  # no normalisation
    assert math_dapo_reward("Answer: 12", "12", strict_box=True) == -1.0  # no box
    assert math_dapo_reward("\\boxed{12}" + "." * 100, "12", strict_box=True) == -1.0  # not in the last 100
    assert math_dapo_reward("\\boxed{12", "12", strict_box=True) == -1.0  # not closed
    assert last_boxed_content("\\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"


def test_scale_is_plus_minus_one():
    assert {math_dapo_reward("Answer: 1", "1"), math_dapo_reward("Answer: 2", "1"), math_dapo_reward("", "1")} == {1.0, -1.0}
