#!/usr/bin/env bash
# Create .venv and install rlvr with everything it needs (idempotent).
# torch is pinned first so that pip takes the CPU build (a wheel this machine keeps locally)
# instead of resolving a CUDA build; set RLVR_TORCH to choose another torch requirement
# and RLVR_EXTRAS (comma-separated: vllm, wandb, bench-trl, ...) for optional parts.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pipi() { .venv/bin/python -m pip install -q "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }; return "${PIPESTATUS[0]}"; }
pipi "${RLVR_TORCH:-torch==2.13.0}"
pipi -e ".[dev${RLVR_EXTRAS:+,$RLVR_EXTRAS}]"
.venv/bin/python -c "import rlvr, torch, transformers; print(f'rlvr {rlvr.__version__} | torch {torch.__version__} | transformers {transformers.__version__}')"
