"""Graceful stops: Ctrl-C or SIGTERM (a cluster's preemption notice) finish the current step, then the run checkpoints."""

from __future__ import annotations

import signal
import threading
from typing import Any


class GracefulInterrupt:
    """The first Ctrl-C (or SIGTERM, a cluster's preemption notice) lets the current step finish, then the
    loop checkpoints and stops (exit 130 for Ctrl-C, 0 for SIGTERM); a second Ctrl-C interrupts at once
    (without a checkpoint of the half-done step)."""

    def __init__(self):
        self.requested = False
        self.reason: str | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.reason = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
        print(f"\n{self.reason}: finishing this step, then writing a checkpoint"
              + (" (Ctrl-C again to stop now)" if signum == signal.SIGINT else ""), flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        return False
