"""The run directory: made (or replaced, or reused) with config.yaml in it, and how many steps it has logged."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

from rlvr.config import RunConfig, to_yaml
from rlvr.logging.jsonl import jsonl_path


class RunDirExists(FileExistsError):
    pass


def completed_steps(run_dir: Path) -> int:
    """How many training steps `run_dir` has logged (0 for a run that failed before its first step)."""
    path = jsonl_path(Path(run_dir) / "metrics.jsonl")  # a finished study run keeps metrics.jsonl.gz
    if not path.exists():
        return 0
    steps = 0
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "reward_mean" in row:
            steps = max(steps, int(row.get("step", 0)))
    return steps


def _free_sibling(run_dir: Path) -> Path:
    i = 2
    while (run_dir.parent / f"{run_dir.name}-{i}").exists():
        i += 1
    return run_dir.parent / f"{run_dir.name}-{i}"


def prepare_run_dir(cfg: RunConfig, *, resume: bool, overwrite: bool, console=None) -> Path:
    """The run directory, made (or replaced) with config.yaml in it.

    An existing directory that holds no completed step (a run that failed while starting) is reused, so
    the corrected command just works; one with completed steps needs --resume or --overwrite.
    """
    run_dir = Path(cfg.run_dir or Path("runs") / cfg.name)
    if resume:
        if not (run_dir / "config.yaml").exists():
            raise FileNotFoundError(f"cannot resume: {run_dir}/config.yaml not found")
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        done = completed_steps(run_dir)
        if done and not overwrite:
            raise RunDirExists(
                f"run directory {run_dir} already holds {done} completed step(s); pass --resume {run_dir} to "
                f"continue it, --overwrite to replace it, or run_dir={_free_sibling(run_dir)} for a new one"
            )
        if not done and console is not None:
            console.print(f"reusing {run_dir} (it holds no completed step)")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    return run_dir
