"""A helper process that answers one JSON line per request, with a hard time limit on every reply.

Rewards that may hang (math-verify on a pathological expression, a user's own function) run in such
a worker: the parent writes a request line and waits at most `timeout_s` for the reply; past that
it kills the worker's whole process group and starts a new one, so a hung or crashed reward costs
one sample, never the run. Requests are served one at a time (calls from several threads take
turns).

Protocol: at start the worker writes {"ready": true} (or {"ready": false, "error": ...}); then one
reply line per request line. Workers are Python files run by path through runpy (so their
directory is not put on sys.path ahead of the standard library), in a session of their own (a
Ctrl-C in the terminal reaches the trainer, which stops them), and write replies to a private copy
of the stdout descriptor so that stray prints cannot corrupt the protocol (`reply_stream`).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

_BOOTSTRAP = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')"


class WorkerTimeout(TimeoutError):
    """The worker sent no reply within the limit; it was killed (and is restarted on the next call)."""


class WorkerDied(RuntimeError):
    """The worker exited, or its pipe broke, during a request."""


def reply_stream():
    """In a worker: a line-buffered writer on a copy of stdout; `print` then goes to stderr."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr
    return out


class LineWorker:
    """Runs the worker script `path`; `request(obj, timeout_s)` sends one JSON line and returns the reply."""

    def __init__(self, path: str | Path, *, name: str, startup_timeout_s: float = 120.0,
                 hello: dict[str, Any] | None = None, start_hint: str = ""):
        """hello: a first line sent at every start (e.g. what to load); start_hint: appended to start errors."""
        self.path, self.name = str(path), name
        self.startup_timeout_s = float(startup_timeout_s)
        self.hello, self.start_hint = hello, start_hint
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._lines: queue.Queue | None = None
        self._ready = False

    def request(self, obj: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        with self._lock:
            self._ensure_started()
            assert self._proc is not None and self._lines is not None and self._proc.stdin is not None
            try:
                self._proc.stdin.write(json.dumps(obj) + "\n")
                self._proc.stdin.flush()
                line = self._lines.get(timeout=timeout_s)
            except queue.Empty:
                self.restart()
                raise WorkerTimeout(f"{self.name} gave no answer within {timeout_s:g} s (killed)") from None
            except (BrokenPipeError, OSError) as e:
                self.restart()
                raise WorkerDied(f"{self.name}: pipe failed: {e}") from None
            if line is None:
                self.restart()
                raise WorkerDied(f"{self.name} exited during a request")
            return json.loads(line)

    def _ensure_started(self) -> None:
        if self._proc is None:
            self._spawn()
        if self._ready:
            return
        assert self._lines is not None
        try:
            line = self._lines.get(timeout=self.startup_timeout_s)
        except queue.Empty:
            self.close()
            raise RuntimeError(f"the {self.name} did not start within {self.startup_timeout_s:g} s") from None
        hello = json.loads(line) if line else {"ready": False, "error": "worker exited at startup"}
        if not hello.get("ready"):
            self.close()
            raise RuntimeError(f"the {self.name} failed to start: {hello.get('error')}{self.start_hint}")
        self._ready = True

    def _spawn(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, self.path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
            bufsize=1, start_new_session=True,
        )
        self._ready = False
        self._lines = queue.Queue()
        threading.Thread(target=_pump, args=(self._proc.stdout, self._lines), daemon=True).start()
        if self.hello is not None:
            try:
                self._proc.stdin.write(json.dumps(self.hello) + "\n")
                self._proc.stdin.flush()
            except OSError:
                pass  # it died at once; _ensure_started reports why

    def restart(self) -> None:
        """Kill the worker and start a new one now, so it warms up while the caller goes on."""
        self.close()
        self._spawn()

    def close(self) -> None:
        """Stop the worker and everything it started (a later request starts a new one)."""
        proc, self._proc, self._ready = self._proc, None, False
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        # Only stdin is closed here: the pump thread owns stdout and ends by itself at EOF (closing
        # a reader that a daemon thread is blocked on aborts the interpreter at shutdown).
        try:
            proc.stdin.close()
        except OSError:
            pass

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _pump(stream, lines: queue.Queue) -> None:
    """Move the worker's reply lines into a queue (None at end of stream) so reads can time out."""
    try:
        for line in stream:
            lines.put(line)
    except (OSError, ValueError):
        pass
    lines.put(None)
