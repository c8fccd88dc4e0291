"""benchmarks/gpu_figures.py (the GPU figures of the 1-GPU path) runs end to end: here on the CPU, on a tiny
configuration, so that the script a lent GPU machine runs in one go has run at least this far."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_figures.py"


def test_gpu_figures_script_runs_on_a_tiny_config(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--models", "tiny", "--steps", "2", "--prompts", "2",
         "--group", "2", "--prompt-len", "8", "--response-len", "8", "--micro-batch", "2", "--gen-batch", "4",
         "--gen-tokens", "4", "--json", str(out)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": str(port)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    fig = json.loads(out.read_text())["models"]["tiny"]
    assert fig["update"]["trained_tokens"] == 4 * 16 and fig["update"]["tokens_per_s"] > 0 and fig["update"]["mfu"] > 0
    assert fig["generation"]["tokens"] == 4 * 4 and fig["generation"]["tokens_per_s"] > 0
