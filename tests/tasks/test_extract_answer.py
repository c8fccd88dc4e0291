"""`Task.extract_answer`: canonical answer keys for majority voting, checked on hand-written responses.

Besides the per-task keys, one invariant: within a task, two responses with the same key get the
same verdict from the grader (the vote never merges a right answer with a wrong one).
"""

from __future__ import annotations

import json

import pytest

from rlvr.eval.metrics import maj_at_n
from rlvr.tasks import Example, get_task
from rlvr.tasks.base import canonical_number
from rlvr.tasks.dataset import last_boxed, normalize_math_answer


def test_canonical_number_forms():
    assert canonical_number("18") == canonical_number("18.0") == canonical_number("18.00") == canonical_number("$18") == "18"
    assert canonical_number("1,018") == "1018"
    assert canonical_number("-0.50") == "-1/2"
    assert canonical_number("7.") == "7"
    assert canonical_number(None) is None
    assert canonical_number("eighteen") is None


# --- arithmetic -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response, key",
    [
        ("18", "18"),
        ("18.0", "18"),
        ("The answer is $18.00.", "18"),
        ("9 + 9 = 18", "18"),
        ("-4", "-4"),
        ("1,000", "1000"),
        ("I don't know", None),
        ("", None),
    ],
)
def test_arithmetic_last_number(response, key):
    assert get_task("arithmetic").extract_answer(response) == key


def test_arithmetic_exact_keeps_the_text():
    task = get_task("arithmetic", answer_from="exact")
    assert task.extract_answer(" 18\n") == "18"
    assert task.extract_answer("18.0") == "18.0"  # the exact grader marks it wrong: it must not vote with "18"
    assert task.extract_answer("  ") is None


def test_answer_tags_are_read_when_on():
    task = get_task("arithmetic", answer_in_tags=True)
    assert task.extract_answer("<think>maybe 7</think> <answer>8.0</answer>") == "8"
    assert task.extract_answer("the answer is 8") is None  # no tag: nothing the grader would accept
    r1 = get_task("arithmetic", template="r1_zero")  # tags are on by default with this template
    assert r1.extract_answer("<think>3+5</think><answer>$8</answer>") == "8"
    plain = get_task("arithmetic")
    assert plain.extract_answer("<answer>8</answer> or 9") == "9"  # tags off: the last number


# --- symbol, countdown, knights and knaves ----------------------------------------------------------


def test_symbol_first_character():
    task = get_task("symbol")
    assert task.extract_answer("  bbbx") == "b"
    assert task.extract_answer("x b b") == "x"
    assert task.extract_answer(" \n ") is None


def test_countdown_value_and_numbers():
    task = get_task("countdown", train_size=1, test_size=1)
    a = task.extract_answer("<answer>(6 + 4) * 3</answer>")
    assert a == ("30", (3, 4, 6))
    assert task.extract_answer("I think\n3 * (4 + 6) = 30") == a  # same numbers, same value: one answer
    assert task.extract_answer("<answer>5 * 6</answer>") == ("30", (5, 6))  # other numbers: another answer
    assert task.extract_answer("<answer>7 / 2</answer>") == ("7/2", (2, 7))
    assert task.extract_answer("<answer>__import__('os')</answer>") is None
    assert task.extract_answer("<answer>1 / 0</answer>") is None
    assert task.extract_answer("") is None


def test_knights_knaves_assignment():
    task = get_task("knights_knaves", train_size=1, test_size=1)
    key = task.extract_answer("Reasoning...\nZoey is a knight, and Ethan is a knave.")
    assert key == (("ethan", False), ("zoey", True))
    # order, case and role words (saint/sinner are knight/knave) do not matter
    assert task.extract_answer("ETHAN is a sinner and zoey is a saint") == key
    assert task.extract_answer("<answer>Ethan is a knave. Zoey is a knight.</answer> later text") == key
    assert task.extract_answer("Zoey is a knight. Zoey is a knave.") == (("zoey", None),)
    assert task.extract_answer("no idea") is None


# --- dataset tasks: the key follows the reward --------------------------------------------------------


@pytest.fixture()
def jsonl(tmp_path):
    path = tmp_path / "data.jsonl"
    rows = [{"question": f"q{i}", "answer": str(i)} for i in range(10)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_gsm8k_keys(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"question": "a", "answer": "#### 1"}) + "\n")
    (tmp_path / "test.jsonl").write_text(json.dumps({"question": "b", "answer": "#### 2"}) + "\n")
    task = get_task("gsm8k", path=str(tmp_path))
    assert task.extract_answer("3 * 6 = 18 eggs\n#### 18") == "18"
    assert task.extract_answer("#### $1,018.00") == "1018"
    assert task.extract_answer("it is \\boxed{17} not 18") == "17"  # boxed beats the last number, as in grading
    assert task.extract_answer("so 12 then 18.") == "18"
    assert task.extract_answer("none") is None


@pytest.mark.parametrize(
    "reward, response, key",
    [
        ("last_number", "so 2 + 2 = 4.0", "4"),
        ("exact", "  Paris \n", "Paris"),
        ("math", r"\boxed{\dfrac{1}{2}}", "1/2"),
        ("symbol", " cc", "c"),
        ("format", "any   text\nhere", "any text here"),  # no key of its own: whitespace-collapsed text
    ],
)
def test_dataset_key_follows_reward(jsonl, reward, response, key):
    assert get_task("jsonl", path=str(jsonl), reward=reward).extract_answer(response) == key


@pytest.mark.parametrize(
    "response, key",
    [
        (r"So the answer is \boxed{\frac{1}{2}}.", "1/2"),
        (r"\boxed{0.5}", "1/2"),
        ("$\\tfrac{1}{2}$", "1/2"),
        (r"\boxed{x = 3}", "3"),
        (r"\boxed{90^\circ}", "90"),
        (r"\boxed{50\%}", "50"),
        (r"\boxed{\text{(B)}}", "(B)"),
        (r"\boxed{\left( 1, 2 \right)}", "(1,2)"),
        (r"\boxed{\sqrt{2}}", r"\sqrt{2}"),
        (r"\boxed{1} then \boxed{\frac{3}{4}}", "3/4"),  # the last box
        (r"\boxed{12", "12"),  # an unclosed box is no box: the last number is the fallback
        (r"\[ x^2 \] and \( 2x \)", "2x"),  # last math span
        ("it is 3.50 dollars", "7/2"),  # no box, no span: the last number
        ("nothing here", None),
        (r"\boxed{1,2}", "1,2"),  # a list, not one thousand two hundred
    ],
)
def test_normalize_math_answer(response, key):
    assert normalize_math_answer(response) == key


def test_last_boxed_nesting():
    assert last_boxed(r"\boxed{\frac{a}{b}}") == r"\frac{a}{b}"
    assert last_boxed(r"\fbox{7}") == "7"
    assert last_boxed(r"\boxed{1} \boxed{2") == "1"  # the last complete box
    assert last_boxed("no box") is None


# --- invariants and the evaluator's use of the key ------------------------------------------------------


@pytest.mark.parametrize(
    "task_name, kwargs, answer, responses",
    [
        ("arithmetic", {}, 18, ["18", "18.0", "$18", "9+9=18", "17", "17.0", "none", ""]),
        ("arithmetic", {"answer_from": "exact"}, 18, ["18", " 18 ", "18.0", "17"]),
        ("symbol", {}, "b", ["b", " bbb", "bx", "x", "xb", ""]),
        ("countdown", {"train_size": 1, "test_size": 1}, {"numbers": [3, 4, 6, 9], "target": 30},
         ["<answer>(6+4)*3</answer>", "3*(4+6)", "<answer>(6+4)*3*1</answer>", "5*6", "9*3+3", "9+6*4-3*3"]),
    ],
)
def test_same_key_same_verdict(task_name, kwargs, answer, responses):
    task = get_task(task_name, **kwargs)
    example = Example(id="x", question="q", answer=answer)
    verdicts: dict = {}
    for response in responses:
        key = task.extract_answer(response)
        correct = task.score(response, example).correct
        if key is not None:
            assert verdicts.setdefault(key, correct) == correct, f"{response!r} shares key {key!r} with another verdict"


def test_votes_merge_number_spellings():
    task = get_task("arithmetic")
    responses = ["17", "18.0", "$18", "The answer is 18."]
    example = Example(id="x", question="q", answer=18)
    keys = [task.extract_answer(r) for r in responses]
    assert keys == ["17", "18", "18", "18"]
    assert maj_at_n(keys, [task.score(r, example).correct for r in responses]) == 1.0
    # without canonical keys the first answer would have won a 1-1-1-1 vote
    assert maj_at_n(responses, [task.score(r, example).correct for r in responses]) == 0.0
