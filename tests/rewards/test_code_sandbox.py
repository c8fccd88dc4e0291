"""The code sandbox: tests pass and fail as they should, and hostile programs are contained and counted."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from rlvr.rewards.code import SandboxLimits, code_reward, extract_code, run_tests

FAST = SandboxLimits(timeout_s=3.0, cpu_s=10, memory_mb=512)  # CPU limit past the wall clock: a loop is a timeout


def test_tests_pass_and_fail_one_by_one():
    result = run_tests("def f(x):\n    return 2 * x\n", ["assert f(2) == 4", "assert f(3) == 7", "assert f(0) == 0"], FAST)
    assert (result.passed, result.total, result.status) == (2, 3, "ok")
    assert result.pass_fraction == pytest.approx(2 / 3) and not result.all_passed
    assert list(result.failures) == [1] and result.failures[1].startswith("AssertionError")


def test_a_program_that_raises_fails_every_test():
    result = run_tests("raise ValueError('nope')\n", ["assert True", "assert True"], FAST)
    assert (result.passed, result.status) == (0, "ok")
    assert all("program raised ValueError: nope" in why for why in result.failures.values())


def test_everyday_python_works_inside():
    program = ("from typing import List, TypeVar, NamedTuple\nimport collections, re, math, itertools, heapq, json\n"
               "T = TypeVar('T')\nclass P(NamedTuple):\n    x: int\n"
               "open('scratch.txt', 'w').write('hi')\n")
    result = run_tests(program, ["assert P(3).x == 3", "assert open('scratch.txt').read() == 'hi'"], FAST)
    assert (result.passed, result.status) == (2, "ok"), result.failures


HOSTILE = {
    "infinite loop": ("while True:\n    pass\n", "timeout"),
    "fork bomb": ("import os\nwhile True:\n    os.fork()\n", "blocked"),
    "subprocess": ("import subprocess\nsubprocess.run(['sh', '-c', 'echo hi'])\n", "blocked"),
    "huge allocation": ("x = bytearray(16 * 1024 ** 3)\n", "limit"),
    "network": ("import socket\nsocket.create_connection(('10.0.0.1', 80), timeout=1)\n", "blocked"),
    "raw socket": ("import socket\nsocket.socket()\n", "blocked"),
    "parent's environment": ("import os\nopen(f'/proc/{os.getppid()}/environ').read()\n", "blocked"),
    "early exit": ("import os\nos._exit(0)\n", "crashed"),
    "sys.exit": ("import sys\nsys.exit(0)\n", "ok"),
    "output flood": ("while True:\n    print('x' * 100000)\n", "limit"),
    "deep recursion": ("def f(n):\n    return f(n + 1)\nf(0)\n", "limit"),
    "ctypes": ("import ctypes\nctypes.CDLL(None).abort()\n", "blocked"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_programs_are_contained_scored_zero_and_counted(name):
    program, status = HOSTILE[name]
    t0 = time.perf_counter()
    reward = code_reward(f"```python\n{program}```", ["assert True"], limits=FAST)
    elapsed = time.perf_counter() - t0
    assert reward.reward == 0.0 and not reward.correct, name
    flags = {k: reward.components[k] for k in ("timeout", "blocked", "limit", "crashed")}
    expected = {k: float(k == status) for k in flags}
    assert flags == expected, (name, flags)
    assert elapsed < FAST.timeout_s + 3, f"{name} took {elapsed:.1f}s"


def test_writing_outside_the_working_directory_is_refused(tmp_path):
    target = tmp_path / f"pwned-{uuid.uuid4().hex}.txt"
    for program in (f"open({str(target)!r}, 'w').write('x')\n",
                    f"import os\nos.close(os.open({str(target)!r}, os.O_CREAT | os.O_WRONLY))\n",
                    f"import shutil\nshutil.rmtree({str(tmp_path)!r})\n",
                    "import os\nos.chdir('/')\nopen('pwned', 'w')\n"):
        result = run_tests(program, ["assert True"], FAST)
        assert result.status == "blocked", (program, result.failures)
    assert not target.exists() and tmp_path.is_dir()


def test_secrets_in_the_trainer_environment_are_not_visible(monkeypatch):
    monkeypatch.setenv("RLVR_TEST_SECRET", "hunter2")
    result = run_tests("import os\nSEEN = dict(os.environ)\n",
                       ["assert 'RLVR_TEST_SECRET' not in SEEN", "assert 'hunter2' not in str(SEEN)"], FAST)
    assert result.passed == 2, result.failures


def test_printed_results_cannot_forge_a_pass():
    fake = "import sys\nfor i in range(3):\n    print(f'pass {i}')\n    sys.stderr.write(f'pass {i}\\n')\n"
    result = run_tests(fake, ["assert False"], FAST)
    assert result.passed == 0 and "pass 0" in result.stdout


def test_output_is_capped():
    result = run_tests("print('y' * 100000)\n", ["assert True"], SandboxLimits(timeout_s=5, output_bytes=100))
    assert result.passed == 1 and len(result.stdout) == 100


def test_the_network_namespace_is_reported():
    # Where the kernel allows unprivileged namespaces the program gets an empty network; the audit
    # hook refuses sockets either way (tested above). This records which one this machine gives.
    result = run_tests("pass\n", ["assert True"], FAST)
    assert isinstance(result.network_isolated, bool) and result.passed == 1


def test_extract_code():
    assert extract_code("Here:\n```python\ndef f():\n    return 1\n```\nDone.") == "def f():\n    return 1\n"
    assert extract_code("```\nx = 1\n```\n```py\ny = 2\n```") == "y = 2\n"
    assert extract_code("```python\nfirst\n```\ntext\n```python\nsecond\n```") == "second\n"
    assert extract_code("def g(): pass") == "def g(): pass"
    assert extract_code("```python\nunterminated = 1\n") == "unterminated = 1\n"


def test_code_reward_partial_credit_and_prefix():
    tests = ["assert add(1, 2) == 3", "assert add(2, 2) == 5"]
    full = code_reward("```python\ndef add(a, b):\n    return a + b\n```", tests, limits=FAST)
    part = code_reward("```python\ndef add(a, b):\n    return a + b\n```", tests, partial_credit=True, limits=FAST)
    assert (full.reward, part.reward, full.components["pass_fraction"]) == (0.0, 0.5, 0.5)
    # a body-only answer gets the signature put in front
    body = code_reward("    return a + b\n", tests[:1], prefix="def add(a, b):\n", entry_point="add", limits=FAST)
    assert body.reward == 1.0 and body.correct
    # a whole function keeps the prompt's imports but not its signature twice
    whole = code_reward("```python\ndef add(a, b) -> List[int]:\n    return a + b\n```", tests[:1],
                        prefix="from typing import List\n\ndef add(a, b):\n", entry_point="add", limits=FAST)
    assert whole.reward == 1.0


def test_the_sandbox_leaves_no_directory_behind():
    import tempfile

    before = {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("rlvr-sandbox-")}
    run_tests("open('x', 'w').write('1')\n", ["assert True"], FAST)
    after = {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("rlvr-sandbox-")}
    assert after <= before
