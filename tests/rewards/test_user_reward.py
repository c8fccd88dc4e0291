"""A user's own reward function: loading, checks before any work, result forms, fields, isolation."""

from __future__ import annotations

import os
import textwrap
import time

import pytest

from rlvr.config import ConfigError, resolve
from rlvr.rewards.base import RewardResult
from rlvr.rewards.user import (
    IsolatedReward,
    RewardSpecError,
    RewardTimeout,
    UserReward,
    load_reward_fn,
    to_result,
)
from rlvr.tasks import build_task, check_reward_fields

REWARDS_PY = '''
import os, time

def exact(response, answer):
    return float(response.strip() == str(answer))

def graded(response, answer, **fields):
    ok = response.strip() == str(answer)
    return {"reward": 1.5 * ok + 0.1, "correct": ok, "match": float(ok), "bonus": 0.1}

def with_tests(response, answer, tests, unit="x"):
    return float(len(tests)) + (unit == "x")

def boom(response, answer):
    if response == "bad":
        raise ZeroDivisionError("bad response")
    return 1.0

def slow(response, answer):
    if response == "hang":
        time.sleep(60)
    return 0.5

def spawns(response, answer):
    import subprocess
    p = subprocess.Popen(["sleep", "60"])
    open(os.environ["PID_FILE"], "w").write(str(p.pid))
    time.sleep(60)

def one_arg(response):
    return 1.0

NOT_A_FUNCTION = 3
'''


@pytest.fixture()
def rewards_file(tmp_path, monkeypatch):
    path = tmp_path / "my_rewards.py"
    path.write_text(textwrap.dedent(REWARDS_PY))
    monkeypatch.chdir(tmp_path)
    return path


def test_loads_a_function_from_a_file_and_from_a_module(rewards_file, monkeypatch):
    assert load_reward_fn("my_rewards.py:exact")("4", 4) == 1.0
    assert load_reward_fn(f"{rewards_file}:exact")("5", 4) == 0.0
    monkeypatch.syspath_prepend(str(rewards_file.parent))
    assert load_reward_fn("my_rewards:exact")(" 4 ", 4) == 1.0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("missing.py:score", "file missing.py not found"),
        ("my_rewards.py:nope", "has no function 'nope' (it defines: boom, exact, graded"),
        ("my_rewards.py:NOT_A_FUNCTION", "is a int, not a function"),
        ("my_rewards.py:one_arg", "must take (response, answer, **fields); its signature is (response)"),
        ("no_such_module_xyz:score", "cannot import module 'no_such_module_xyz'"),
    ],
)
def test_a_bad_reward_is_named_with_what_was_expected(rewards_file, spec, message):
    with pytest.raises(RewardSpecError, match=None) as err:
        load_reward_fn(spec)
    assert message in str(err.value)


def test_a_bad_reward_is_rejected_before_any_work(rewards_file):
    from rlvr.train.preflight import preflight

    # whether a reward exists and loads: the preflight's question; how the rewards are set: the config's
    with pytest.raises(ConfigError, match="file missing.py not found"):
        preflight(resolve({}, ["task.reward=missing.py:score"]))
    with pytest.raises(ConfigError, match="did you mean 'math'"):
        preflight(resolve({}, ["task.reward=maht"]))
    with pytest.raises(ConfigError, match="not both"):
        resolve({}, ["task.reward=math", "task.rewards=[{fn: math}]"])
    with pytest.raises(ConfigError, match="distinct name"):
        resolve({}, ["task.rewards=[{fn: my_rewards.py:exact}, {fn: exact}]"])
    cfg = resolve({}, ["task.reward=my_rewards.py:exact"])
    preflight(cfg)
    assert cfg.task.reward == "my_rewards.py:exact"


def test_result_forms():
    assert to_result(1.0, "f") == RewardResult(1.0, True)
    assert to_result(0.5, "f") == RewardResult(0.5, False)
    assert to_result(True, "f") == RewardResult(1.0, True)
    got = to_result({"reward": 0.2, "correct": True, "format": 1, "answer": 0.0}, "f")
    assert got == RewardResult(0.2, True, {"format": 1.0, "answer": 0.0})
    with pytest.raises(TypeError, match="without a 'reward' key"):
        to_result({"score": 1.0}, "f")
    with pytest.raises(TypeError, match="returned str"):
        to_result("1", "f")
    with pytest.raises(ValueError, match="non-finite"):
        to_result(float("nan"), "f")


def test_fields_are_passed_by_name_and_required_ones_checked(rewards_file):
    reward = UserReward("my_rewards.py:with_tests")
    assert reward("r", 1, {"tests": [1, 2, 3], "other": 9}).reward == 4.0
    # a row's own "answer" (and "response") field is the positional argument, not a second keyword
    assert UserReward("my_rewards.py:graded")("4", 4, {"answer": "4", "response": "x"}).correct
    assert reward("r", 1, {"tests": [1], "unit": "y"}).reward == 1.0
    with pytest.raises(RewardSpecError, match=r"needs field\(s\) tests, but the problem at data.jsonl:3 has: other"):
        reward.check_fields({"other": 1}, "data.jsonl:3")


def test_a_jsonl_task_with_a_user_reward_passes_row_fields(rewards_file, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "test"):
        rows = [{"question": f"q{split}{i}", "answer": str(i), "tests": list(range(i))} for i in range(3)]
        (data / f"{split}.jsonl").write_text("".join(__import__("json").dumps(r) + "\n" for r in rows))
    cfg = resolve({}, ["task.name=jsonl", f"task.kwargs.path={data}", "task.reward=my_rewards.py:with_tests",
                       "task.reward_timeout_s=null"])
    task = build_task(cfg.task)
    ex = task.examples("train")[2]
    check_reward_fields(task, ex)
    result = task.score("anything", ex)
    assert result.reward == 3.0 and result.components == {"with_tests": 3.0}
    (data / "train.jsonl").write_text('{"question": "q", "answer": "1"}\n')  # no "tests" field
    task = build_task(cfg.task)
    with pytest.raises(RewardSpecError, match=r"needs field\(s\) tests, but the problem at .*train.jsonl:1 has: "
                                              "answer, question"):
        check_reward_fields(task, task.examples("train")[0])


def test_weighted_rewards_log_each_component(rewards_file):
    cfg = resolve({}, ["task.name=symbol", "task.rewards=[{fn: my_rewards.py:graded, weight: 2}, "
                       "{fn: format, weight: 0.5, name: fmt}]", "task.reward_timeout_s=null"])
    task = build_task(cfg.task)
    ex = task.examples("train")[0]
    result = task.score(str(ex.answer), ex)
    assert result.correct
    assert result.components == {"graded": 1.6, "graded/match": 1.0, "graded/bonus": 0.1, "fmt": 0.0}
    assert result.reward == pytest.approx(2 * 1.6)


def test_isolated_reward_agrees_with_in_process(rewards_file):
    isolated = IsolatedReward("my_rewards.py:graded", timeout_s=30)
    try:
        for response in ("4", "5"):
            assert isolated(response, 4, {"x": 1}) == UserReward("my_rewards.py:graded")(response, 4, {"x": 1})
    finally:
        isolated.close()


def test_a_raising_reward_reports_its_traceback_and_the_worker_goes_on(rewards_file):
    reward = IsolatedReward("my_rewards.py:boom", timeout_s=30)
    try:
        with pytest.raises(RuntimeError, match="ZeroDivisionError: bad response"):
            reward("bad", 0)
        assert reward("good", 0).reward == 1.0
    finally:
        reward.close()


def test_a_hanging_reward_is_killed_at_the_limit_and_the_next_call_works(rewards_file):
    reward = IsolatedReward("my_rewards.py:slow", timeout_s=1.0)
    try:
        assert reward("warm up", 0).reward == 0.5
        t0 = time.perf_counter()
        with pytest.raises(RewardTimeout, match="reward_timeout_s=1"):
            reward("hang", 0)
        assert time.perf_counter() - t0 < 5
        assert reward("fine", 0).reward == 0.5 and reward.timeouts == 1
    finally:
        reward.close()


def test_a_timed_out_reward_takes_its_child_processes_with_it(rewards_file, tmp_path, monkeypatch):
    pid_file = tmp_path / "pid"
    monkeypatch.setenv("PID_FILE", str(pid_file))
    reward = IsolatedReward("my_rewards.py:spawns", timeout_s=2.0)
    try:
        with pytest.raises(RewardTimeout):
            reward("x", 0)
        child = int(pid_file.read_text())
        deadline = time.time() + 5
        while time.time() < deadline and _alive(child):
            time.sleep(0.1)
        assert not _alive(child), "the reward's child process survived the timeout"
    finally:
        reward.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"  # a zombie waiting for its (gone) parent counts as dead
    except FileNotFoundError:
        return False
    except OSError:
        return os.path.exists(f"/proc/{pid}")
