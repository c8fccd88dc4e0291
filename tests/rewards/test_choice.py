"""The multiple-choice answer parser: the forms models write, and what must not count as an answer."""

import pytest

from rlvr.rewards.choice import choice_reward, parse_choice

CASES = [
    ("The answer is (C).", "C"),
    ("The answer is C", "C"),
    ("the correct answer is b", None),  # a bare lower-case letter is too ambiguous ("is a ...")
    ("the correct answer is (b)", "B"),
    ("Answer: D", "D"),
    ("**Answer:** A", "A"),
    ("The answer is: **C**", "C"),
    ("Final answer: (B)", "B"),
    ("So the answer would be (D).", "D"),
    ("I pick option C because it fits.", "C"),
    ("The correct choice is B", "B"),
    (r"Therefore $\boxed{A}$", "A"),
    (r"\boxed{\text{D}}", "D"),
    ("Let me think.\nIt is not A, since...\n(B)", "B"),
    ("Let me think.\n\n**C**", "C"),
    ("C) Paris", "C"),
    ("B. Because water boils at 100 C.", "B"),
    ("answer is (C), not (B)", "C"),
    ("First I thought the answer is A. Wait, the answer is D.", "D"),  # the last statement counts
    ("A cat is an animal.", None),
    ("I am not sure.", None),
    ("The answer is E", None),  # only A-D with four options
    ("", None),
]


@pytest.mark.parametrize(("text", "letter"), CASES)
def test_parse_choice(text, letter):
    assert parse_choice(text) == letter


def test_more_options_widen_the_letters():
    assert parse_choice("The answer is (F)", n_choices=6) == "F"
    assert parse_choice("The answer is (F)", n_choices=4) is None
    with pytest.raises(ValueError, match="n_choices"):
        parse_choice("x", n_choices=1)


def test_choice_reward():
    assert choice_reward("The answer is (B).", "B") == 1.0
    assert choice_reward("The answer is (B).", "c") == 0.0
    assert choice_reward("answer: (f)", "F") == 1.0  # a gold letter past D widens the letters
