"""The shared tiny run of the tests: the tiny model (tests/conftest.py's tiny_dir) on the symbol task, a fraction of a
second per step, and a console that keeps what it prints."""

from __future__ import annotations

from rlvr.config import RunConfig, resolve


def tiny_config(tiny_dir, run_dir, *overrides: str, preset: str = "grpo") -> RunConfig:
    """A run of the tiny model on the symbol task, sized to take a fraction of a second per step."""
    base = [
        f"model.name={tiny_dir}",
        "model.device=cpu",
        "task.name=symbol",
        "task.template=chat",
        f"algorithm.preset={preset}",
        "rollout.prompts_per_step=8",
        "rollout.group_size=8",
        "rollout.max_new_tokens=4",
        "optim.lr=3e-3",
        "train.steps=4",
        "eval.every=0",
        "checkpoint.every=0",
        "log_samples=4",
        f"run_dir={run_dir}",
    ]
    return resolve({}, base + list(overrides))


def sigterm_after_rows(cmd, metrics, rows: int = 2, timeout: float = 120):
    """Run `cmd` as a process, send it SIGTERM once `metrics` (its metrics.jsonl) has `rows` rows, as a
    scheduler's preemption would; (returncode, stdout, stderr)."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while not (metrics.exists() and metrics.read_text().count("\n") >= rows):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


class ListConsole:
    """A stand-in for rich's Console that keeps what is printed."""

    def __init__(self, lines):
        self.lines = lines
        from rich.console import Console

        self._console = Console(quiet=True)

    def print(self, *objects, **kwargs):
        self.lines.append(" ".join(str(o) for o in objects))

    def __getattr__(self, name):
        return getattr(self._console, name)
