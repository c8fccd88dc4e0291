"""Every test folder runs alone with plain `pytest tests/<folder>` (not only the whole suite)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = sorted(p for p in (ROOT / "tests").iterdir() if p.is_dir() and any(p.glob("test_*.py")))


def test_each_folder_collects_on_its_own():
    pytest = Path(sys.executable).with_name("pytest")
    command = [str(pytest)] if pytest.exists() else [sys.executable, "-m", "pytest"]
    for folder in FOLDERS:
        out = subprocess.run([*command, "--collect-only", "-q", "-p", "no:cacheprovider", str(folder.relative_to(ROOT))],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, f"{folder.name}: {out.stdout[-2000:]}{out.stderr[-2000:]}"
