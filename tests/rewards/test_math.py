import threading
import time

import pytest

from rlvr.rewards import REWARDS, MathVerifier, math_answer, math_check, math_reward, math_verify_stats


@pytest.mark.parametrize(
    "response, gold, expected",
    [
        ("\\boxed{5}", "5", 1.0),
        ("5.0", "5", 1.0),
        ("$5$", "5", 1.0),
        ("The answer is 5.", "5", 1.0),
        ("so \\(\\frac{10}{2}\\)", "5", 1.0),
        ("The answer is \\boxed{\\frac{1}{2}}", "0.5", 1.0),
        ("The answer is 1/2", "\\frac{1}{2}", 1.0),  # bare LaTeX gold gets delimiters
        ("$\\sqrt{8}$", "2\\sqrt{2}", 1.0),  # symbolic equality
        ("\\boxed{x + 1}", "$1 + x$", 1.0),
        ("The answer is 6.", "5", 0.0),
        ("\\boxed{5.01}", "5", 0.0),
        ("no answer at all", "5", 0.0),
        ("", "5", 0.0),
    ],
)
def test_math_reward(response, gold, expected):
    assert math_reward(response, gold) == expected


def test_registry_and_stats_count_calls():
    before = math_verify_stats()
    assert REWARDS["math"]("\\boxed{7}", 7) == 1.0
    after = math_verify_stats()
    assert after["calls"] == before["calls"] + 1 and after["correct"] == before["correct"] + 1


def test_pathological_input_is_cut_at_the_limit_and_counted():
    # SymPy grinds on 9^(9^(9^9)) for as long as it is allowed to (minutes).
    verifier = MathVerifier(timeout_s=0.5)
    try:
        assert verifier.check("\\boxed{1}", "1").correct  # start the worker outside the timing
        start = time.perf_counter()
        result = verifier.check("\\boxed{9^{9^{9^{9}}}}", "5")
        elapsed = time.perf_counter() - start
        assert result == math_answer.MathCheck(False, timed_out=True)
        assert elapsed < 0.5 + 0.5  # cut near its limit, not after the minutes SymPy would take
        assert verifier.stats["timeouts"] == 1
        assert verifier.check("\\boxed{2}", "2").correct  # the worker is still usable
    finally:
        verifier.close()


def test_default_math_reward_times_out_to_zero():
    before = math_verify_stats()["timeouts"]
    assert math_check("\\boxed{9^{9^{9^{9}}}}", "5", timeout_s=0.3).timed_out
    assert math_reward("\\boxed{9^{9^{9^{9}}}}", "5", timeout_s=0.3) == 0.0
    assert math_verify_stats()["timeouts"] == before + 2


HANGING_WORKER = r'''
import json, signal, sys, time
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})  # a hang that no alarm can break
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    if "HANG" in request["response"]:
        time.sleep(3600)
    print(json.dumps({"correct": True, "timed_out": False, "error": None}), flush=True)
'''


def test_a_worker_that_ignores_its_alarm_is_killed_and_replaced(tmp_path, monkeypatch):
    worker = tmp_path / "hanging_worker.py"
    worker.write_text(HANGING_WORKER)
    monkeypatch.setattr(math_answer, "_WORKER_PATH", worker)
    verifier = MathVerifier(timeout_s=0.5)
    try:
        assert verifier.check("fine", "1").correct
        start = time.perf_counter()
        result = verifier.check("HANG", "1")
        assert time.perf_counter() - start < 0.5 + 0.5
        assert result.timed_out and not result.correct
        assert verifier.stats["kills"] == 1 and verifier.stats["timeouts"] == 1
        assert verifier.check("fine again", "1").correct  # a fresh worker answers
    finally:
        verifier.close()


def test_a_worker_that_cannot_start_is_a_clear_error(tmp_path, monkeypatch):
    worker = tmp_path / "broken_worker.py"
    worker.write_text('import json; print(json.dumps({"ready": False, "error": "ImportError: no math_verify"}))')
    monkeypatch.setattr(math_answer, "_WORKER_PATH", worker)
    with pytest.raises(RuntimeError, match="failed to start: ImportError: no math_verify"):
        MathVerifier().check("1", "1")


def test_a_worker_that_dies_scores_zero_and_is_counted(tmp_path, monkeypatch):
    worker = tmp_path / "dying_worker.py"
    worker.write_text('import json, sys; print(json.dumps({"ready": True}), flush=True); sys.stdin.readline()')
    monkeypatch.setattr(math_answer, "_WORKER_PATH", worker)
    verifier = MathVerifier(timeout_s=5.0)
    try:
        result = verifier.check("1", "1")
        assert not result.correct and not result.timed_out and "exited" in result.error
        assert verifier.stats["errors"] == 1
    finally:
        verifier.close()


def test_works_from_threads():
    # math-verify's own timeout uses signals and refuses to run outside the main thread; ours does not.
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(math_reward(f"\\boxed{{{i}}}", i))) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [1.0] * 4


def test_bad_timeout():
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        MathVerifier(timeout_s=0)
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        math_reward("1", "1", timeout_s=-1)


@pytest.mark.parametrize("response", ["The answer is 25.", "\\boxed{25}", "0.25", "\\boxed{25\\%}", "25%"])
def test_a_percentage_gold_accepts_its_number(response):
    """Pinned, documented behaviour: math-verify reads 25\\% as 25/100 and accepts 25 or 0.25 for it."""
    assert math_reward(response, "25\\%") == 1.0


def test_a_percentage_gold_still_rejects_other_numbers():
    """Other numbers stay wrong; DAPO's string-matching scorer (`math_dapo`) rejects 25 for 25\\%."""
    assert math_reward("The answer is 26.", "25\\%") == 0.0
    assert math_reward("25%", "25") == 1.0  # and a plain gold accepts the percentage
    assert REWARDS["math_dapo"]("Answer: 25", "25\\%") == -1.0
