"""Generated tasks: held-out problems are never trained on; gold answers grade as correct; seeds."""

import pytest

from rlvr.tasks import Example, get_task


def problems(examples):
    return [ex.meta.get("problem_id", ex.id) for ex in examples]


def assert_disjoint(task, key=lambda ex: ex.question):
    train, test = task.examples("train"), task.examples("test")
    assert train and test
    assert not {key(ex) for ex in train} & {key(ex) for ex in test}
    assert not set(problems(train)) & set(problems(test))
    return train, test


def test_single_digit_addition_default():
    task = get_task("arithmetic")
    train, test = assert_disjoint(task)
    # 100 problems: 80 train, 20 held out; the 200 test examples repeat each held-out problem 10 times.
    assert len(train) == 80 and len(set(problems(train))) == 80
    assert len(test) == 200 and len(set(problems(test))) == 20
    assert {problems(test).count(p) for p in set(problems(test))} == {10}
    assert len({ex.id for ex in test}) == 200  # ids stay unique
    assert {ex.question for ex in train} | {ex.question for ex in test} == {
        f"What is {a} + {b}? Answer with just the number." for a in range(10) for b in range(10)
    }
    for ex in train + test:
        a, b = map(int, ex.meta["problem"].split(" + "))
        assert ex.answer == a + b


@pytest.mark.parametrize(
    "options",
    [
        {"digits": 2, "n_terms": 2, "operators": "+-"},  # listed: 20,000 problems
        {"digits": 3, "n_terms": 3, "operators": "+-*", "train_size": 2000},  # sampled
        {"digits": 6, "n_terms": 4, "operators": "*", "train_size": 300},  # answers beyond the evaluator's default limits
    ],
)
def test_other_arithmetic_spaces_are_disjoint_and_distinct(options):
    task = get_task("arithmetic", **options)
    train, test = assert_disjoint(task)
    assert len(test) == 200 and len(set(problems(test))) == 200
    for ex in train[:50] + test[:50]:
        assert task.score(str(ex.answer), ex).correct
        assert not task.score(str(ex.answer + 1), ex).correct


def test_split_does_not_depend_on_the_seed():
    a, b = get_task("arithmetic", seed=0), get_task("arithmetic", seed=1)
    assert set(problems(a.examples("test"))) == set(problems(b.examples("test")))
    assert problems(a.examples("train")) != problems(b.examples("train"))  # order does
    assert problems(a.examples("train")) == problems(get_task("arithmetic", seed=0).examples("train"))


def test_arithmetic_scoring():
    task = get_task("arithmetic")
    ex = Example(id="x", question="What is 3 + 5?", answer=8)
    for response, correct in [("8", True), ("3 + 5 = 8", True), ("The answer is 8.", True), ("8, or 9", False), ("", False)]:
        result = task.score(response, ex)
        assert result.correct is correct and result.reward == float(correct) and result.components == {"answer": float(correct)}
    exact = get_task("arithmetic", answer_from="exact")
    assert exact.score(" 8\n", ex).correct and not exact.score("3 + 5 = 8", ex).correct


def test_r1_zero_grades_the_answer_tag_and_reports_format():
    task = get_task("arithmetic", template="r1_zero", format_weight=0.1)
    ex = Example(id="x", question="What is 3 + 5?", answer=8)
    assert task.score("<think>3 + 5</think> <answer>8</answer>", ex).components == {"answer": 1.0, "format": 1.0}
    result = task.score("<think>3 + 5 = 8</think>", ex)  # the 8 is in the thinking: not an answer
    assert not result.correct and result.reward == 0.0
    assert task.score("<answer>8</answer>", ex).reward == 1.0  # right answer, bad format


def test_symbol():
    task = get_task("symbol")
    train, test = assert_disjoint(task)
    assert len(train) == 80 and len(test) == 20
    for split in (train, test):
        assert {ex.answer for ex in split} == set("abcd")  # every symbol in both splits
    ex = test[0]
    assert ex.question.endswith(f"Say: {ex.answer}")
    full = task.score(ex.answer * 8, ex)
    assert full.reward == 1.0 and full.correct
    half = task.score(" ".join(ex.answer * 4), ex)
    assert half.reward == 0.5 and half.correct
    other = "a" if ex.answer != "a" else "b"
    assert task.score(other * 8, ex).reward == 0.0 and not task.score(other * 8, ex).correct
    with pytest.raises(ValueError, match="n_variants must be >= 2"):
        get_task("symbol", n_variants=1)


def test_countdown():
    task = get_task("countdown", train_size=300, test_size=50)
    train, test = assert_disjoint(task, key=lambda ex: ex.id)
    assert len(train) == 300 and len(test) == 50 and len({ex.id for ex in test}) == 50
    for ex in train[:100] + test:
        numbers, target = ex.answer["numbers"], ex.answer["target"]
        assert len(numbers) == 4 and all(1 <= n <= 99 for n in numbers) and 1 <= target <= 1000
        assert task.score(f"<answer>{ex.meta['solution']}</answer>", ex).correct
        assert task.score(f"<answer>{ex.meta['solution']}</answer>", ex).reward == 1.0
        assert not task.score(f"<answer>{ex.meta['solution']} + 1</answer>", ex).correct
    assert get_task("countdown", train_size=300).examples("train") == train  # deterministic


def test_countdown_use_all_and_too_small_a_space():
    task = get_task("countdown", use_all=True, train_size=5, test_size=5)
    ex = task.examples("test")[0]
    assert "and all of them" in ex.question
    assert task.score(f"<answer>{ex.meta['solution']}</answer>", ex).correct
    with pytest.raises(ValueError, match="could draw only"):
        get_task("countdown", n_numbers=2, min_number=1, max_number=2, test_size=50).examples("test")


@pytest.fixture(scope="module")
def kk():
    pytest.importorskip("reasoning_gym")
    return get_task("knights_knaves", n_people=2, train_size=100, test_size=40)


def test_knights_knaves_splits_and_gold(kk):
    train, test = assert_disjoint(kk)
    assert not {ex.meta["structure"] for ex in train} & {ex.meta["structure"] for ex in test}
    assert len(train) == 100 and len(test) == 40
    for ex in train[:20] + test:
        assert len(ex.answer) == 2 and all(name in ex.question for name in ex.answer)
        assert kk.score(ex.meta["answer_text"], ex).correct
        assert kk.score(f"<answer>{ex.meta['answer_text']}</answer>", ex).correct
        flipped = ", ".join(f"{n} is a {'knave' if t else 'knight'}" for n, t in ex.answer.items())
        assert not kk.score(flipped, ex).correct
    assert "Format your answer like" in test[0].question


def test_knights_knaves_difficulty_knobs():
    pytest.importorskip("reasoning_gym")
    ex = get_task("knights_knaves", n_people=5, depth_constraint=3, width_constraint=3, train_size=3, test_size=3).examples("test")[0]
    assert len(ex.answer) == 5 and "You meet 5 inhabitants" in ex.question
    assert (ex.meta["n_people"], ex.meta["depth_constraint"], ex.meta["width_constraint"]) == (5, 3, 3)
    with pytest.raises(ValueError, match="width_constraint >= 2"):
        get_task("knights_knaves", width_constraint=1)


def test_limit_and_split_errors():
    task = get_task("arithmetic")
    assert task.examples("test", limit=3) == task.examples("test")[:3]
    assert task.examples("train", limit=0) == []
    with pytest.raises(ValueError, match="unknown split 'val'; known: train, test"):
        task.examples("val")
    with pytest.raises(ValueError, match="limit must be >= 0"):
        task.examples("test", limit=-1)
