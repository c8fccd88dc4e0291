"""The multiple-choice task: MMLU-style and GPQA-style rows, gold letters, prompts, grading, errors."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from rlvr.tasks import get_task


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_mmlu_style_rows_with_index_letter_or_text_answers(tmp_path):
    rows = [
        {"question": "Capital of France?", "choices": ["Rome", "Paris", "Oslo", "Bern"], "answer": 1},
        {"question": "2 + 2?", "choices": ["3", "5", "4", "22"], "answer": "C"},
        {"question": "Largest planet?", "choices": ["Mars", "Venus", "Earth", "Jupiter"], "answer": "Jupiter"},
        {"question": "Sky colour?", "choices": {"A": "blue", "B": "green"}, "answer": "(A)"},
    ]
    _write(tmp_path / "train.jsonl", rows)
    _write(tmp_path / "test.jsonl", [rows[0]])
    task = get_task("multiple_choice", path=str(tmp_path))
    train = task.examples("train")
    assert [ex.answer for ex in train] == ["C", "D", "A"]
    assert "A. 3\nB. 5\nC. 4\nD. 22" in train[0].question and "The answer is (X)" in train[0].question
    assert task.score("2 + 2 = 4, so the answer is (C).", train[0]).correct
    assert not task.score("The answer is (A).", train[0]).correct
    assert task.extract_answer("... the answer is (C)") == task.extract_answer("Answer: C") == "C"
    assert task.examples("test")[0].answer == "B"


def test_gpqa_style_rows_are_shuffled_by_question_hash(tmp_path):
    rows = [{"Question": f"q{i}?", "Correct Answer": f"right{i}", "Incorrect Answer 1": f"w1-{i}",
             "Incorrect Answer 2": f"w2-{i}", "Incorrect Answer 3": f"w3-{i}"} for i in range(40)]
    _write(tmp_path / "data.jsonl", rows)
    options = dict(path=str(tmp_path / "data.jsonl"), question_field="Question", correct_field="Correct Answer",
                   incorrect_fields=["Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"],
                   test_fraction=0.25)
    task = get_task("multiple_choice", **options)
    examples = task.examples("train") + task.examples("test")
    assert len(examples) == 40
    for ex in examples:
        i = ex.meta["row"]["Question"][1:-1]
        assert f"{ex.answer}. right{i}" in ex.question  # the gold letter points at the right option
    letters = Counter(ex.answer for ex in examples)
    assert len(letters) == 4 and max(letters.values()) < 20, letters  # not always the same letter
    again = get_task("multiple_choice", **options)
    assert [ex.answer for ex in again.examples("train")] == [ex.answer for ex in task.examples("train")]


@pytest.mark.parametrize(("row", "message"), [
    ({"question": "q", "choices": ["a", "b"], "answer": 5}, "answer index 5 is out of range for 2 options"),
    ({"question": "q", "choices": ["a", "b"], "answer": "zebra"}, "is not a letter"),
    ({"question": "q", "choices": "a, b", "answer": 0}, "must be a list of options"),
    ({"question": "q", "options": ["a", "b"], "answer": 0}, "missing field 'choices'"),
])
def test_bad_rows_name_the_file_and_line(tmp_path, row, message):
    _write(tmp_path / "train.jsonl", [{"question": "ok", "choices": ["a", "b"], "answer": 0}, row])
    _write(tmp_path / "test.jsonl", [{"question": "t", "choices": ["a", "b"], "answer": 0}])
    with pytest.raises((ValueError, KeyError), match="train.jsonl:2") as err:
        get_task("multiple_choice", path=str(tmp_path)).examples("train")
    assert message in str(err.value)


def test_gpqa_layout_needs_the_wrong_options():
    with pytest.raises(ValueError, match="incorrect_fields"):
        get_task("multiple_choice", path="x.jsonl", correct_field="Correct Answer")
