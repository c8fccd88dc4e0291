"""Test-wide settings.

The tests run tiny models whose matrix products are far too small to gain from a second thread;
with two threads, a CPU shared with other work makes every parallel region wait for a descheduled
thread (measured: one tiny training step 80x slower). RLVR_TEST_THREADS overrides.
"""

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(int(os.environ.get("RLVR_TEST_THREADS", "1")))

# The data shipped beside the repository (../shared/data), wherever the checkout lives.
_REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = next(
    (p for p in (_REPO.parent / "shared" / "data", Path("/work/shared/data")) if p.is_dir()),
    _REPO.parent / "shared" / "data",
)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny random Llama-family model in Hugging Face format (rlvr.models.tiny), made once per session."""
    from rlvr.models.tiny import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="session")
def tiny_moe_dir(tmp_path_factory):
    """A tiny random Qwen3-MoE model (hidden 32, 2 layers, 8 experts, top-2; rlvr.models.tiny), made once."""
    from rlvr.models.tiny import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny_moe") / "model", seed=0, arch="qwen3_moe",
                               hidden_size=32, num_heads=2)
