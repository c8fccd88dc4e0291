#!/usr/bin/env bash
# The vllm engine's tests, in .venv-vllm (scripts/setup_vllm.sh), on CPU: one thread, 1 GiB of KV cache.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_vllm.sh
OMP_NUM_THREADS=1 VLLM_CPU_KVCACHE_SPACE=1 .venv-vllm/bin/python -m pytest -q -m vllm tests/rollout/test_vllm.py "$@"
