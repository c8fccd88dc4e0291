"""Test-wide settings.

The tests run tiny models whose matrix products are far too small to gain from a second thread;
with two threads, a CPU shared with other work makes every parallel region wait for a descheduled
thread (measured: one tiny training step 80x slower). RLVR_TEST_THREADS overrides.
"""

import os
from pathlib import Path

import torch

torch.set_num_threads(int(os.environ.get("RLVR_TEST_THREADS", "1")))

# The data shipped beside the repository (../shared/data), wherever the checkout lives.
_REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = next(
    (p for p in (_REPO.parent / "shared" / "data", Path("/work/shared/data")) if p.is_dir()),
    _REPO.parent / "shared" / "data",
)
