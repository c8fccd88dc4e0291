"""Worker process for `rlvr.rewards.math_answer`: runs math-verify on requests read from stdin.

Protocol, one JSON object per line. Startup: the worker writes {"ready": true} (or {"ready":
false, "error": ...}). Request: {"response": str, "answer": str, "timeout_s": float}. Reply:
{"correct": bool, "timed_out": bool, "error": str | null}.

Run by path through runpy (never as `python _math_worker.py`, which would put rlvr/rewards on
sys.path ahead of the standard library). It imports only the standard library and math-verify.
Replies go to a private copy of the stdout descriptor, so stray prints from libraries cannot corrupt
the protocol. The soft limit here is a SIGALRM timer (this is the worker's main thread); the parent
kills the process if even that does not fire, e.g. inside a long C call.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys


class _SoftTimeout(BaseException):
    """BaseException so that math-verify's `except Exception` blocks cannot swallow it."""


def _on_alarm(signum, frame):
    raise _SoftTimeout()


def gold_text(answer: str) -> str:
    """A gold answer with math delimiters, so that LaTeX like \\frac{1}{2} parses: "$...$" if it has none."""
    if any(d in answer for d in ("$", "\\boxed", "\\(", "\\[")):
        return answer
    return f"${answer}$"


def main() -> None:
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr
    try:
        from math_verify import parse, verify
    except Exception as e:  # noqa: BLE001 - reported to the parent, which raises with the message
        out.write(json.dumps({"ready": False, "error": f"{type(e).__name__}: {e}"}) + "\n")
        return
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    signal.signal(signal.SIGALRM, _on_alarm)
    out.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        reply = {"correct": False, "timed_out": False, "error": None}
        try:
            signal.setitimer(signal.ITIMER_REAL, max(float(request["timeout_s"]), 1e-3))
            try:
                # math-verify's own timeouts are disabled (None): they would replace our SIGALRM timer.
                gold = parse(gold_text(request["answer"]), parsing_timeout=None)
                pred = parse(request["response"], parsing_timeout=None)
                reply["correct"] = bool(gold) and bool(pred) and bool(verify(gold, pred, timeout_seconds=None))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _SoftTimeout:  # outside the `finally`, so an alarm that fires inside it is caught too
            reply["correct"], reply["timed_out"] = False, True
        except Exception as e:  # noqa: BLE001 - a verifier error scores 0 and is reported
            reply["error"] = f"{type(e).__name__}: {e}"[:500]
        out.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
