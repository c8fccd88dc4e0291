"""Math answers checked by math-verify (Hugging Face), with a hard time limit that always holds.

`parse` extracts the answer of a response (\\boxed{...}, $...$, \\(...\\), or a plain number or
expression, the last one found) as a SymPy object; `verify(gold, pred)` compares symbolically and
numerically. Some inputs make SymPy run for minutes ("\\boxed{9^{9^{9^{9}}}}"). math-verify's own
limit uses `signal.alarm`, which works only in the main thread, takes whole seconds, and cannot
interrupt a long C call. So the check runs in a separate worker process: the worker stops itself
with a SIGALRM timer at 0.9 x the limit, and if that fails the parent kills it at the limit and
starts a new one. A call that hits either limit scores 0 and is counted in `stats["timeouts"]`.
Calls are safe from any thread (they take turns on one worker).

The gold answer is given math delimiters if it has none ("1/2" -> "$1/2$", "\\frac{1}{2}" ->
"$\\frac{1}{2}$"), so plain numbers and bare LaTeX both parse.

Percentages: math-verify reads "25\\%" as 25/100 and accepts either reading, so a gold "25\\%" is
matched by "25", "0.25" and "25\\%" alike (and a gold "25" by "25\\%"). String-matching scorers
reject "25" for "25\\%": DAPO's (`math_dapo` here, verl's math_dapo.py) and verl's gsm8k scorer.
(verl's math_verify scorer, math-verify itself with the gold in \\boxed{}, accepts it, measured with
math-verify 0.9.0.)
"""

from __future__ import annotations

import atexit
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlvr.rewards.base import REWARDS
from rlvr.rewards.worker import LineWorker, WorkerDied, WorkerTimeout

_WORKER_PATH = Path(__file__).with_name("_math_worker.py")
_SOFT_FRACTION = 0.9


@dataclass(frozen=True)
class MathCheck:
    """The outcome of one check: `correct`, and whether it was cut by the time limit or errored."""

    correct: bool
    timed_out: bool = False
    error: str | None = None


class MathVerifier:
    """math-verify in a worker process with a hard per-call time limit (see the module docstring).

    stats: calls, correct, timeouts (soft or hard), kills (hard limit: worker killed and restarted),
    errors (verifier raised, or the worker died).
    """

    def __init__(self, timeout_s: float = 5.0, *, startup_timeout_s: float = 120.0):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0; got {timeout_s}")
        self.timeout_s = float(timeout_s)
        self.stats = {"calls": 0, "correct": 0, "timeouts": 0, "kills": 0, "errors": 0}
        self._worker = LineWorker(_WORKER_PATH, name="math-verify worker", startup_timeout_s=startup_timeout_s,
                                  start_hint="; install it with `pip install 'math-verify[antlr4-13-2]'`")

    def check(self, response: str, answer: Any, *, timeout_s: float | None = None) -> MathCheck:
        """Whether `response` states the gold `answer`; never takes longer than the limit (after startup)."""
        limit = self.timeout_s if timeout_s is None else float(timeout_s)
        if limit <= 0:
            raise ValueError(f"timeout_s must be > 0; got {limit}")
        request = {"response": str(response), "answer": str(answer), "timeout_s": _SOFT_FRACTION * limit}
        self.stats["calls"] += 1
        try:
            reply = self._worker.request(request, limit)
        except WorkerTimeout:
            self.stats["timeouts"] += 1
            self.stats["kills"] += 1
            return MathCheck(False, timed_out=True)
        except WorkerDied as e:
            self.stats["errors"] += 1
            return MathCheck(False, error=str(e))
        result = MathCheck(bool(reply["correct"]), bool(reply["timed_out"]), reply["error"])
        self.stats["correct"] += result.correct
        self.stats["timeouts"] += result.timed_out
        self.stats["errors"] += result.error is not None
        return result

    def close(self) -> None:
        """Stop the worker (a later check starts a new one)."""
        self._worker.close()


_DEFAULT: MathVerifier | None = None
_DEFAULT_LOCK = threading.Lock()


def default_verifier() -> MathVerifier:
    """The process-wide verifier behind `math_reward` (started on first use, stopped at exit)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = MathVerifier()
            atexit.register(_DEFAULT.close)
        return _DEFAULT


def math_check(response: str, answer: Any, *, timeout_s: float = 5.0) -> MathCheck:
    """`math_reward` with its flags: whether the check was cut by the time limit or failed."""
    return default_verifier().check(response, answer, timeout_s=timeout_s)


def math_reward(response: str, answer: Any, *, timeout_s: float = 5.0) -> float:
    """1.0 if math-verify finds the gold `answer` in `response` within `timeout_s` seconds, else 0.0.

    Timeouts score 0 and are counted in `math_verify_stats()["timeouts"]`. A percentage gold accepts
    its number too: "25" is right for "25\\%" (see the module docstring; DAPO's scorer says wrong).

    >>> math_reward("so the answer is \\\\boxed{\\\\frac{1}{2}}", "0.5")
    1.0
    >>> math_reward("The answer is 5.", "5"), math_reward("$5$", "6")
    (1.0, 0.0)
    """
    return 1.0 if math_check(response, answer, timeout_s=timeout_s).correct else 0.0


def math_verify_stats() -> dict[str, int]:
    """A copy of the counters of the verifier behind `math_reward` (calls, correct, timeouts, kills, errors)."""
    return dict(default_verifier().stats)


REWARDS.register("math")(math_reward)
