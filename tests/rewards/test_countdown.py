import time
from fractions import Fraction

import pytest

from rlvr.rewards import REWARDS, UnsafeExpression, countdown_reward, evaluate_arithmetic, extract_countdown_expression
from rlvr.rewards.countdown import check_countdown

NUMBERS, TARGET = [3, 4, 6, 25], 30


@pytest.mark.parametrize(
    "response",
    [
        "<answer>(6 + 4) * 3</answer>",
        "<think>try</think><answer>(6+4)*3</answer>",
        "<answer>3 * (4 + 6) = 30</answer>",  # the left side of "=" is the expression
        "Some reasoning.\n(6 + 4) × 3\n",  # no tags: the last line; unicode times
        "<answer>$(6 + 4) \\times 3$</answer>",
        "<answer>25 + 6 - (4 - 3)</answer>",  # all four numbers
    ],
)
def test_solutions(response):
    assert countdown_reward(response, NUMBERS, TARGET) == 1.0


@pytest.mark.parametrize(
    "response, why",
    [
        ("<answer>(6 + 4) * 3 + 3 - 3</answer>", "uses numbers not available"),  # 3 three times
        ("<answer>5 * 6</answer>", "uses numbers not available"),  # 5 not given
        ("<answer>6 * 4 + 3</answer>", "evaluates to 27"),
        ("<answer>30</answer>", "uses numbers not available"),
        ("<answer>6.0 * 5</answer>", "not a valid expression"),  # floats are not integers
        ("<answer>(6 + 4) * 3 * (4 - 4)</answer>", "uses numbers not available"),
    ],
)
def test_non_solutions(response, why):
    assert countdown_reward(response, NUMBERS, TARGET) == 0.0
    assert why in check_countdown(extract_countdown_expression(response), NUMBERS, TARGET)


def test_use_all():
    assert countdown_reward("<answer>(6 + 4) * 3</answer>", NUMBERS, TARGET, use_all=True) == 0.0
    assert countdown_reward("<answer>(25 - 4 + 6 - 3) + 6</answer>", [3, 4, 6, 6, 25], 30, use_all=True) == 1.0
    assert REWARDS["countdown"]("<answer>(6 + 4) * 3</answer>", {"numbers": NUMBERS, "target": TARGET}) == 1.0
    with pytest.raises(ValueError, match="numbers"):
        REWARDS["countdown"]("x", 30)


def test_exact_fractions():
    # 6 / (1 - 3/4) = 24 exactly; floating point would also pass here, but (1/3)*3 must be exactly 1.
    assert countdown_reward("<answer>6 / (1 - 3 / 4)</answer>", [1, 3, 4, 6], 24) == 1.0
    assert evaluate_arithmetic("1 / 3 * 3") == 1
    assert evaluate_arithmetic("-(2 - 7) / 2") == Fraction(5, 2)


HOSTILE = [
    "__import__('os').system('touch {marker}')",
    "<answer>__import__('os').system('touch {marker}')</answer>",
    "<answer>9**9**9**9</answer>",
    "<answer>9 * 9 ** 9 ** 9</answer>",
    "<answer>" + "(" * 10_000 + "1" + ")" * 10_000 + "</answer>",
    "<answer>" + "-" * 10_000 + "1</answer>",
    "<answer>(1).__class__.__bases__</answer>",
    "<answer>(lambda: 1)()</answer>",
    "<answer>[x for x in (1,)]</answer>",
    "<answer>" + "9" * 100_000 + "</answer>",
    "<answer>99999999 * 99999999 * 99999999 * 99999999</answer>",
    "<answer>3 / 0</answer>",
    "<answer>3 / (4 - 4)</answer>",
    "<answer>3 // 1</answer>",
    "<answer>3 % 2</answer>",
    "<answer>3 < 4</answer>",
    "<answer>'30'</answer>",
    "<answer>30j</answer>",
    "<answer>1e3</answer>",
    "<answer>\x00</answer>",
    "",
]


@pytest.mark.parametrize("template", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_input_scores_zero_fast_and_runs_nothing(template, tmp_path):
    marker = tmp_path / "executed"
    response = template.format(marker=marker) if "{marker}" in template else template
    start = time.perf_counter()
    assert countdown_reward(response, [1, 2, 3, 4, 9, 30, 99999999], 30) == 0.0
    assert time.perf_counter() - start < 0.2
    assert not marker.exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("(" * 300 + "1" + ")" * 300, "longer than"),
        ("-" * 200 + "1", "deeper than"),
        ("2 ** 3", "no \\*\\*"),
        ("abs(3)", "characters other than"),
        ("1 / 0", "division by zero"),
        ("10000000 * 10000000", "exceeds"),
        ("1.5 + 1", "Constant is not allowed"),
        ("(1, 2)", "characters other than"),
        ("1 +", "not an arithmetic expression"),
    ],
)
def test_evaluator_rejections_say_why(text, message):
    with pytest.raises(UnsafeExpression, match=message):
        evaluate_arithmetic(text)


def test_extract_expression():
    assert extract_countdown_expression("<answer>\n(1 + 2) * 3\n</answer>") == "(1 + 2) * 3"
    assert extract_countdown_expression("line one\n\n  4 * 5 = 20.  \n\n") == "4 * 5"
    assert extract_countdown_expression("   \n ") is None
    assert countdown_reward("", [1], 1) == 0.0


@pytest.mark.parametrize(
    "response, expected",
    [
        ("<answer>2 * 5 * 7 * 4 = 280</answer>", 1.0),
        ("<answer>2 * 5 * 7 * 4 = 280.0</answer>", 1.0),  # a number equal to the value
        ("<answer>2 * 5 * 7 * 4 = 281</answer>", 0.0),  # the stated value is not the expression's
        ("<answer>2 * 5 * 7 * 4 = 280 = 280</answer>", 0.0),  # a second "="
        ("<answer>2 * 5 * 7 * 4 = two hundred eighty</answer>", 0.0),  # not a number
        ("<answer>2 * 5 * 7 * 4 =</answer>", 0.0),
        ("<answer>2 * 5 * 7 * 3 = 210</answer>", 0.0),  # true, but not the target (3 not given either)
    ],
)
def test_the_right_hand_side_of_an_equation_is_checked(response, expected):
    """`expr = value` with a wrong value used to score full marks (only the left side was read)."""
    assert countdown_reward(response, [2, 5, 7, 4], 280, use_all=True) == expected


def test_a_wrong_stated_value_says_why():
    assert "states 281" in check_countdown("2 * 5 * 7 * 4", [2, 4, 5, 7], 280, stated="281")
    assert "not a number" in check_countdown("2 * 5 * 7 * 4", [2, 4, 5, 7], 280, stated="280 = 280")


def test_a_final_period_is_removed_without_comment():
    """Documented rule: "expr." is "expr" (TinyZero would fail "(...)." and pass "... * 4." only as a float)."""
    assert countdown_reward("<answer>(6 + 4) * 3.</answer>", NUMBERS, TARGET) == 1.0
    assert countdown_reward("<answer>3 * (6 + 4).</answer>", NUMBERS, TARGET) == 1.0
    assert countdown_reward("<answer>3 * (6 + 4) = 30.</answer>", NUMBERS, TARGET) == 1.0
