"""Append-only JSONL sinks that a resumed run trims back to its checkpoint, and their readers.

A finished run of a study keeps its metrics gzipped (metrics.jsonl.gz, `compress_jsonl`: about a fifth
of the bytes), so that the studies kept in the repository stay small; `read_jsonl` reads either form and
`jsonl_path` finds the one a run directory holds.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from typing import Any


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no nan/inf; null keeps the row parseable
    if hasattr(value, "item") and callable(value.item):
        return _clean(value.item())
    return value


class JsonlWriter:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after `step` (they belong to steps a resumed run will redo)."""
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in kept))


def jsonl_path(path: str | Path) -> Path:
    """`path` (e.g. RUN_DIR/metrics.jsonl), or `path`.gz where only the gzipped copy exists; `path` when
    neither does (so that a "not found" message names the usual file)."""
    path = Path(path)
    gz = path.with_name(path.name + ".gz")
    return gz if not path.exists() and gz.exists() else path


def compress_jsonl(path: str | Path) -> Path:
    """Write `path`.gz next to `path` (left for the caller to remove) and return it. The bytes depend on the
    content only (no file name or time stamp in the gzip header), so the same rows give the same file."""
    path = Path(path)
    gz = path.with_name(path.name + ".gz")
    with gz.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as f:
        f.write(path.read_bytes())
    return gz


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a JSONL file, gzipped or not (by its `.gz` suffix)."""
    path = Path(path)
    rows = []
    with (gzip.open(path, "rt") if path.suffix == ".gz" else path.open()) as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
    return rows
