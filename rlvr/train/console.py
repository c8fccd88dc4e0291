"""What a training run prints: the live bar, one line per step or evaluation, checkpoint sizes, the summary."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from rlvr.logging.jsonl import JsonlWriter

SUMMARY_KEYS = ["reward_mean", "accuracy", "response_len_mean", "entropy", "kl", "step_time_s", "gen_tokens_per_s"]


def progress_bar(console, enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"), MofNCompleteColumn(), BarColumn(),
        TextColumn("reward {task.fields[reward]}"), TextColumn("acc {task.fields[acc]}"),
        TextColumn("{task.fields[step_s]}s/step"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=console, disable=not enabled, transient=False,
    )


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else (
        path.stat().st_size if path.exists() else 0)


def checkpoint_line(path: Path) -> str:
    """What a checkpoint costs on disk: the model, the trainer state (optimizer), and the disk left."""
    model, state = _size(path / "model"), _size(path / "trainer.pt") + _size(path / "optimizer")
    free = shutil.disk_usage(path).free
    return (f"checkpoint {path.name}: {_human(model + state)} (model {_human(model)}, optimizer and trainer state "
            f"{_human(state)}); {_human(free)} free on its disk")


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def step_line(step: int, total: int, m: dict[str, Any]) -> str:
    """One compact line per training step (when no live bar is shown)."""
    return (f"step {step}/{total}  reward {_fmt(m.get('reward_mean'))}  acc {_fmt(m.get('accuracy'), '.2f')}  "
            f"entropy {_fmt(m.get('entropy'))}  kl {_fmt(m.get('kl'), '.4f')}  loss {_fmt(m.get('loss'), '.4g')}  "
            f"len {_fmt(m.get('response_len_mean'), '.1f')}  {_fmt(m.get('step_time_s'), '.1f')}s")


def eval_line(row: dict[str, Any]) -> str:
    """One line per held-out evaluation: accuracy with its interval, the largest pass@k, greedy accuracy."""
    parts = [f"eval step {row['step']}: accuracy {_fmt(row.get('eval_accuracy'))}"]
    if row.get("eval_accuracy_ci_low") is not None:
        parts[0] += f" [{_fmt(row['eval_accuracy_ci_low'])}, {_fmt(row['eval_accuracy_ci_high'])}]"
    ks = sorted((int(k.split("@")[1]), k) for k in row if k.startswith("eval_pass@") and k.split("@")[1].isdigit())
    if ks:
        parts.append(f"pass@{ks[-1][0]} {_fmt(row[ks[-1][1]])}")
    if row.get("eval_accuracy_greedy") is not None:
        parts.append(f"greedy {_fmt(row['eval_accuracy_greedy'])}")
    return ", ".join(parts)


def finish(run_dir: Path, console, metrics_log: JsonlWriter) -> list[Path]:
    """Print the run's summary table and write its plots (returned)."""
    from rich.table import Table

    from rlvr.logging.jsonl import read_jsonl
    from rlvr.logging.plots import plot_run

    rows = read_jsonl(metrics_log.path)
    train_rows = [r for r in rows if "reward_mean" in r]
    eval_rows = [r for r in rows if "eval_accuracy" in r]
    table = Table(title=f"run summary: {run_dir}")
    table.add_column("metric")
    table.add_column("first", justify="right")
    table.add_column("last", justify="right")
    for key in SUMMARY_KEYS:
        vals = [r[key] for r in train_rows if r.get(key) is not None]
        if vals:
            table.add_row(key, f"{vals[0]:.4g}", f"{vals[-1]:.4g}")
    for key in ("eval_accuracy", "eval_accuracy_greedy"):
        vals = [r[key] for r in eval_rows if r.get(key) is not None]
        if vals:
            table.add_row(key, f"{vals[0]:.4g}", f"{vals[-1]:.4g}")
    console.print(table)
    try:
        paths = plot_run(run_dir)
        console.print(f"plots: {paths[-1].parent}")
        return paths
    except Exception as exc:  # plots are a convenience; a plotting failure must not fail a finished run
        console.print(f"[yellow]could not write plots: {exc}")
        return []
