"""Code rewards: run a model-written program against unit tests in a sandboxed process.

`run_tests(program, tests)` starts `_code_runner.py` (see it for what is refused inside) in a
throw-away working directory with an empty environment, its own session (process group), and
limits: `timeout_s` of wall clock (then the whole process group is killed), `cpu_s` of CPU time,
`memory_mb` of address space, `file_mb` per written file; stdout and stderr go to files of at most
`file_mb` and are read back capped at `output_bytes`. Every outcome is a `CodeResult`; nothing the
program does raises in the caller.

`code_reward(response, tests, entry_point=None)` extracts the program from a response (the last
```python block, else the last ``` block, else the whole text), runs the tests, and returns
components `pass_fraction` (tests passed / tests) and `all_passed`, plus one-hot outcome flags
(`timeout`, `blocked`: the sandbox refused an operation, `limit`: memory / CPU / file size,
`crashed`: no result at all), so a
trainer's per-step means count each kind. `correct` is all tests passed (HumanEval's pass@k).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlvr.rewards.base import REWARDS, RewardResult

_RUNNER = Path(__file__).with_name("_code_runner.py")
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def normalise_tests(value: Any, where: str) -> list[str]:
    """A row's tests as a list of source strings, or an error naming the row."""
    tests = [value] if isinstance(value, str) else value
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) and t.strip() for t in tests):
        raise ValueError(f"{where}: tests must be a non-empty string or a list of non-empty strings "
                         f"(Python source, e.g. \"assert add(2, 3) == 5\"); got {str(value)[:80]!r}")
    return tests


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 10.0
    """Wall clock for the program and all its tests; then the process group is killed."""
    cpu_s: int = 10
    memory_mb: int = 1024
    """Address-space limit (RLIMIT_AS); Python itself needs about 30 MB."""
    file_mb: int = 16
    """Largest file the program may write (RLIMIT_FSIZE), stdout and stderr included."""
    output_bytes: int = 8192
    """stdout / stderr kept in the result."""


@dataclass
class CodeResult:
    passed: int
    total: int
    status: str
    """"ok" (every test ran to a pass or a failure), "timeout" (wall clock), "blocked" (the sandbox
    refused an operation), "limit" (out of memory, CPU time, file size or recursion depth), "crashed"
    (the process ended without reporting every test: an early exit, a segfault)."""
    failures: dict[int, str] = field(default_factory=dict)
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    network_isolated: bool = False

    @property
    def pass_fraction(self) -> float:
        return self.passed / self.total if self.total else 0.0

    @property
    def all_passed(self) -> bool:
        return self.total > 0 and self.passed == self.total


def _minimal_env(workdir: str) -> dict[str, str]:
    """No secrets: only what a Python interpreter needs (PATH, HOME in the sandbox, a UTF-8 locale)."""
    return {"PATH": "/usr/bin:/bin", "HOME": workdir, "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}


def run_tests(program: str, tests: list[str], limits: SandboxLimits | None = None) -> CodeResult:
    """Run `program`, then each test (Python source, e.g. "assert f(2) == 4"), in one sandboxed process."""
    limits = limits or SandboxLimits()
    if not tests:
        raise ValueError("run_tests needs at least one test")
    nonce = secrets.token_hex(16)
    workdir = tempfile.mkdtemp(prefix="rlvr-sandbox-")
    read_fd, write_fd = os.pipe()
    t0 = time.perf_counter()
    status = None
    try:
        with open(os.path.join(workdir, ".stdout"), "wb") as out, open(os.path.join(workdir, ".stderr"), "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-B", str(_RUNNER)], stdin=subprocess.PIPE, stdout=out, stderr=err,
                cwd=workdir, env=_minimal_env(workdir), start_new_session=True, pass_fds=(write_fd,),
            )
        child_fd = write_fd  # pass_fds keeps the descriptor's number in the child
        os.close(write_fd)
        write_fd = -1
        results: list[bytes] = []
        reader = threading.Thread(target=_drain, args=(read_fd, results, 1 << 20), daemon=True)
        reader.start()
        request = {"program": program, "tests": list(tests), "nonce": nonce, "result_fd": child_fd,
                   "limits": {"cpu_s": limits.cpu_s, "memory_mb": limits.memory_mb, "file_mb": limits.file_mb}}
        try:
            proc.stdin.write(json.dumps(request).encode())
            proc.stdin.close()
        except OSError:
            pass  # it died at once; reported as crashed
        try:
            proc.wait(timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            status = "timeout"
        _kill_group(proc)
        reader.join(timeout=5)
        stdout = _head(os.path.join(workdir, ".stdout"), limits.output_bytes)
        stderr = _head(os.path.join(workdir, ".stderr"), limits.output_bytes)
    finally:
        if write_fd >= 0:
            os.close(write_fd)
        shutil.rmtree(workdir, ignore_errors=True)
    passed, failures, isolated = _parse(b"".join(results), nonce, len(tests))
    if status is None:
        status = _status(proc.returncode, passed + len(failures) < len(tests), failures.values())
    return CodeResult(passed=passed, total=len(tests), status=status, failures=failures, stdout=stdout,
                      stderr=stderr, duration_s=time.perf_counter() - t0, network_isolated=isolated)


_LIMIT_SIGNALS = {-signal.SIGXCPU, -signal.SIGXFSZ}
_LIMIT_ERRORS = ("MemoryError", "File too large", "RecursionError")


def _status(returncode: int | None, unreported: bool, failures) -> str:
    """How a run that finished within the wall clock ended (see `CodeResult.status`)."""
    reasons = list(failures)
    if any("sandbox:" in why for why in reasons):
        return "blocked"
    if returncode in _LIMIT_SIGNALS or any(err in why for why in reasons for err in _LIMIT_ERRORS):
        return "limit"
    return "crashed" if unreported else "ok"


def _drain(fd: int, into: list[bytes], cap: int) -> None:
    total = 0
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            if total < cap:
                into.append(chunk[: cap - total])
            total += len(chunk)
    finally:
        os.close(fd)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _head(path: str, limit: int) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return ""


def _parse(data: bytes, nonce: str, n_tests: int) -> tuple[int, dict[int, str], bool]:
    passed: set[int] = set()
    failures: dict[int, str] = {}
    isolated = False
    for line in data.decode("utf-8", errors="replace").splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 2 or parts[0] != nonce:
            continue  # not the runner's: a program cannot forge the nonce
        if parts[1] == "info":
            isolated = "network_isolated=1" in line
            continue
        try:
            i = int(parts[2])
        except (IndexError, ValueError):
            continue
        if not 0 <= i < n_tests or i in passed or i in failures:
            continue
        if parts[1] == "pass":
            passed.add(i)
        elif parts[1] == "fail":
            failures[i] = parts[3] if len(parts) > 3 else ""
    return len(passed), failures, isolated


def extract_code(response: str) -> str:
    """The program in a response: the last ```python block, else the last ``` block, else the whole text."""
    blocks = _FENCE.findall(response)
    if not blocks:
        return response
    python = [body for lang, body in blocks if lang.lower() in ("python", "py", "python3")]
    return (python or [body for _, body in blocks])[-1]


def code_reward(response: str, tests: list[str], *, prefix: str = "", entry_point: str | None = None,
                partial_credit: bool = False, limits: SandboxLimits | None = None) -> RewardResult:
    """Score a response by running its program against `tests` (see the module docstring).

    prefix: source put before the program when the program does not define `entry_point` itself
    (HumanEval: the prompt's imports and signature, for a model that wrote only the body).
    partial_credit: the reward is the fraction of tests passed; otherwise 1 only when all pass.
    """
    program = extract_code(response)
    if prefix and not (entry_point and re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", program, re.M)):
        program = prefix + program
    elif prefix:
        # the model wrote the whole function: keep the prompt's imports (HumanEval prompts import typing)
        imports = "".join(line + "\n" for line in prefix.splitlines() if line.startswith(("import ", "from ")))
        program = imports + program
    result = run_tests(program, tests, limits)
    components = {
        "pass_fraction": result.pass_fraction,
        "all_passed": float(result.all_passed),
        "timeout": float(result.status == "timeout"),
        "blocked": float(result.status == "blocked"),
        "limit": float(result.status == "limit"),
        "crashed": float(result.status == "crashed"),
    }
    reward = result.pass_fraction if partial_credit else float(result.all_passed)
    return RewardResult(reward=reward, correct=result.all_passed, components=components)


@REWARDS.register("code")
def code_tests_reward(response: str, tests: Any) -> RewardResult:
    """The `code` reward under the registry's (response, answer) signature, for any dataset task: `answer`
    is the tests (Python source strings, or one string), run under the default sandbox limits."""
    answer = tests if isinstance(tests, dict) else {"tests": normalise_tests(tests, "the answer")}
    return code_answer_reward(response, answer)


def code_answer_reward(response: str, answer: dict[str, Any], *, partial_credit: bool = False,
                       limits: SandboxLimits | None = None) -> RewardResult:
    """`code_reward` of a code task's answer {"tests": [...], "prefix": ... (optional), "entry_point": ... (optional)}."""
    return code_reward(response, answer["tests"], prefix=answer.get("prefix", ""), entry_point=answer.get("entry_point"),
                       partial_credit=partial_credit, limits=limits)
