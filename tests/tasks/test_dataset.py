import json

import pytest

from rlvr.tasks import TASKS, get_task, task_options
from rlvr.tasks import dataset as dataset_module
from tests.conftest import SHARED_DATA

GSM8K_DIR = SHARED_DATA / "gsm8k"
needs_gsm8k = pytest.mark.skipif(not (GSM8K_DIR / "test.jsonl").exists(), reason="no local GSM8K copy")


@needs_gsm8k
def test_gsm8k_from_a_directory():
    task = get_task("gsm8k", path=str(GSM8K_DIR))
    test, train = task.examples("test"), task.examples("train")
    assert len(test) == 1319 and len(train) + task.dropped_overlap == 7473
    assert not {ex.question for ex in train} & {ex.question for ex in test}
    first = test[0]
    assert first.answer == "18" and first.question.startswith("Janet") and first.question.endswith('after "####".')
    assert first.meta["source"] == f"{GSM8K_DIR / 'test.jsonl'}:1"
    assert task.score("16 - 3 - 4 = 9 eggs; 9 * 2 = 18\n#### 18", first).correct
    assert task.score("\\boxed{18}", first).correct and not task.score("#### 19", first).correct
    for ex in test:  # every gold answer grades itself as right
        assert task.score(ex.meta["row"]["answer"], ex).reward == 1.0


def test_gsm8k_defaults_to_the_hub_which_needs_datasets(monkeypatch):
    calls = []

    def fake_hub(hub_id, config, split):
        calls.append((hub_id, config, split))
        return [({"question": "1 + 1?", "answer": "1 + 1 = 2\n#### 2"}, f"hub:{hub_id}[{split}]#0")]

    monkeypatch.setattr(dataset_module, "load_hub_rows", fake_hub)
    task = get_task("gsm8k")
    assert [ex.answer for ex in task.examples("test")] == ["2"]
    assert calls == [("openai/gsm8k", "main", "test")]


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_single_file_split_by_hash(tmp_path):
    rows = [json.dumps({"q": f"What is {i} * 2?", "a": str(2 * i)}) for i in range(200)]
    path = write(tmp_path / "data.jsonl", rows + [""])  # blank lines are skipped
    task = get_task("jsonl", path=str(path), question_field="q", answer_field="a", reward="last_number", test_fraction=0.25)
    train, test = task.examples("train"), task.examples("test")
    assert len(train) + len(test) == 200 and 30 <= len(test) <= 70
    assert not {ex.question for ex in train} & {ex.question for ex in test}
    ex = test[0]
    assert task.score(f"it is {ex.answer}", ex).correct and not task.score("it is -1", ex).correct


def test_jsonl_directory_drops_train_rows_that_are_test_questions(tmp_path):
    write(tmp_path / "train.jsonl", [json.dumps({"question": q, "answer": "1"}) for q in ["a", "b", "c "]])
    write(tmp_path / "test.jsonl", [json.dumps({"question": q, "answer": "1"}) for q in ["c", "d"]])
    task = get_task("jsonl", path=str(tmp_path), reward="exact", instruction="Reply with 1.", id_field="question")
    assert [ex.id for ex in task.examples("train")] == ["a", "b"] and task.dropped_overlap == 1
    assert task.examples("test")[0].question == "c\n\nReply with 1."


def test_malformed_jsonl_names_file_and_line(tmp_path):
    path = write(tmp_path / "bad.jsonl", [json.dumps({"question": "q", "answer": "1"}), "", '{"question": "q2", "answer": '])
    with pytest.raises(ValueError, match=f"{path}:3: malformed JSON"):
        get_task("jsonl", path=str(path), reward="exact").examples("train")
    path = write(tmp_path / "list.jsonl", ['["not", "an", "object"]'])
    with pytest.raises(ValueError, match=f"{path}:1: expected a JSON object, got list"):
        get_task("jsonl", path=str(path), reward="exact").examples("train")


def test_missing_field_is_named_with_the_fields_present(tmp_path):
    path = write(tmp_path / "d.jsonl", [json.dumps({"question": "q", "answer": "1"}), json.dumps({"question": "q2", "solution": "2"})])
    task = get_task("jsonl", path=str(path), reward="exact", test_fraction=0.5)
    with pytest.raises(KeyError, match=f"{path}:2: missing field 'answer'; the row has fields: question, solution"):
        task.examples("train") + task.examples("test")


def test_gsm8k_row_without_a_final_number(tmp_path):
    write(tmp_path / "train.jsonl", [json.dumps({"question": "q", "answer": "no marker"})])
    write(tmp_path / "test.jsonl", [json.dumps({"question": "q2", "answer": "#### 3"})])
    task = get_task("gsm8k", path=str(tmp_path))
    assert task.examples("test")[0].answer == "3"
    with pytest.raises(ValueError, match="train.jsonl:1: the answer has no '#### <number>' line"):
        task.examples("train")


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        get_task("jsonl", path=str(tmp_path / "nope.jsonl"), reward="exact").examples("test")
    write(tmp_path / "train.jsonl", [json.dumps({"question": "q", "answer": "1"})])
    with pytest.raises(FileNotFoundError, match="test.jsonl not found.*it has: train.jsonl"):
        get_task("jsonl", path=str(tmp_path), reward="exact").examples("test")


def test_hf_task_with_a_field_mapping(monkeypatch):
    rows = {"train": [{"problem": "x", "solution": "\\boxed{4}"}], "validation": [{"problem": "y", "solution": "5"}]}
    monkeypatch.setattr(dataset_module, "load_hub_rows", lambda hub_id, config, split: [(r, f"hub#{i}") for i, r in enumerate(rows[split])])
    task = get_task("hf", hub_id="someone/math", hub_splits={"test": "validation"}, question_field="problem",
                    answer_field="solution", reward="gsm8k")
    (ex,) = task.examples("test")
    assert ex.question == "y" and task.score("so 5", ex).correct


def test_hf_without_datasets_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(ImportError, match="needs the `datasets` package.*or pass path="):
        get_task("hf", hub_id="openai/gsm8k").examples("test")


def test_get_task_errors():
    with pytest.raises(KeyError, match="unknown task 'arithmatic'.*did you mean 'arithmetic'"):
        get_task("arithmatic")
    with pytest.raises(ValueError, match="task 'arithmetic' has no option 'digit' \\(did you mean 'digits'\\?\\); options: digits"):
        get_task("arithmetic", digit=2)
    with pytest.raises(ValueError, match="task 'jsonl' needs option\\(s\\) path"):
        get_task("jsonl")
    with pytest.raises(KeyError, match="unknown reward 'maths'"):
        get_task("jsonl", path="x.jsonl", reward="maths")
    with pytest.raises(ValueError, match="exactly one of path=... or hub_id=..."):
        get_task("jsonl", path="x.jsonl", hub_id="a/b")
    with pytest.raises(ValueError, match="unknown answer_from"):
        get_task("arithmetic", answer_from="first")
    with pytest.raises(ValueError, match="operators must be"):
        get_task("arithmetic", operators="/")


def test_every_task_is_registered_and_documents_its_options():
    assert set(TASKS) == {"arithmetic", "code", "countdown", "gsm8k", "hf", "humaneval", "jsonl", "knights_knaves",
                          "multiple_choice", "symbol"}
    for name, cls in TASKS.items():
        options = task_options(cls)
        assert {"template", "system_prompt", "answer_in_tags", "format_weight"} <= set(options), name
        assert cls.__doc__ or __import__(cls.__module__, fromlist=["x"]).__doc__, name
