import json
from fractions import Fraction

import pytest

from rlvr.rewards import REWARDS, extract_gsm8k_answer, gsm8k_reward, last_number, parse_number
from tests.conftest import SHARED_DATA

GSM8K_TEST = SHARED_DATA / "gsm8k" / "test.jsonl"


def test_every_gsm8k_test_answer_parses_and_grades_itself():
    if not GSM8K_TEST.exists():
        pytest.skip(f"{GSM8K_TEST} not present")
    rows = [json.loads(line) for line in GSM8K_TEST.read_text().splitlines() if line.strip()]
    assert len(rows) == 1319
    for row in rows:
        gold = extract_gsm8k_answer(row["answer"])
        assert gold is not None and "," not in gold, row["answer"][-60:]
        value = parse_number(gold)
        assert value is not None and value.denominator == 1  # GSM8K answers are integers
        assert gsm8k_reward(row["answer"], row["answer"]) == 1.0
        assert gsm8k_reward(f"The answer is {value + 1}.", gold) == 0.0
    # A known row: Janet's ducks.
    assert extract_gsm8k_answer(rows[0]["answer"]) == "18"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("#### 1,018", "1018"),
        ("#### -5", "-5"),
        ("#### $42.50", "42.50"),
        ("first #### 3\nsecond #### 4", "4"),
        ("#### ", None),
        ("no marker 7", None),
    ],
)
def test_extract_gsm8k_answer(text, expected):
    assert extract_gsm8k_answer(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("3 + 5 = 8", "8"),
        ("It costs $1,250.", "1250"),
        ("x = -3", "-3"),
        ("10-2", "2"),  # a binary minus is not a sign
        ("a list 3,4", "4"),
        ("pi is about 3.14159", "3.14159"),
        ("half is .5", ".5"),
        ("none", None),
        ("", None),
    ],
)
def test_last_number(text, expected):
    assert last_number(text) == expected


@pytest.mark.parametrize(
    "response, gold, expected",
    [
        ("\\boxed{5}", "5", 1.0),
        ("5.0", "5", 1.0),
        ("$5$", "5", 1.0),
        ("The answer is 5.", "5", 1.0),
        ("5", "#### 5", 1.0),
        ("1,000 apples", "1000", 1.0),
        ("#### 5\nbut maybe 6", "5", 1.0),  # the #### line wins over later numbers
        ("\\boxed{5} or 6", 5, 1.0),  # the box wins over later numbers
        ("5.01", "5", 0.0),
        ("The answer is 6.", "5", 0.0),
        ("no number", "5", 0.0),
        ("5", "not a number", 0.0),
    ],
)
def test_gsm8k_reward(response, gold, expected):
    assert gsm8k_reward(response, gold) == expected


def test_parse_number_is_exact():
    assert parse_number("0.1") + parse_number("0.2") == Fraction(3, 10)
    assert parse_number("1" * 200) is None  # junk length is refused, not parsed
    assert parse_number(True) is None
    assert REWARDS["last_number"]("so 12", 12) == 1.0
    assert REWARDS["gsm8k"]("#### 12", "12") == 1.0
