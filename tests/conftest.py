"""Test-wide settings.

The tests run tiny models whose matrix products are far too small to gain from a second thread;
with two threads, a CPU shared with other work makes every parallel region wait for a descheduled
thread (measured: one tiny training step 80x slower). RLVR_TEST_THREADS overrides.
"""

import os

import torch

torch.set_num_threads(int(os.environ.get("RLVR_TEST_THREADS", "1")))
