"""A test plugin (loaded with RLVR_PLUGINS, rlvr.core.plugins) that injects the faults the multi-rank tests need,
so that no fault injection sits on the trainer's path:

- RLVR_FAULT_LOCAL_DENOMINATORS=1: each rank normalises its loss by its own token and sequence counts (the classic
  data-parallel bug; the negative control of tests/train/test_distributed.py);
- RLVR_FAULT_RAISE=RANK:STEP: rank RANK raises at the start of step STEP.
"""

from __future__ import annotations

import os

from rlvr.train import optimize
from rlvr.train.trainer import Trainer

if os.environ.get("RLVR_FAULT_LOCAL_DENOMINATORS") == "1":
    def _local_denominators(b, rows):
        mask = b.loss_mask[[r for r in rows if b.own is None or r in b.own]]
        return mask.sum(), mask.any(dim=-1).sum()

    optimize.loss_denominators = _local_denominators

if os.environ.get("RLVR_FAULT_RAISE"):
    _step = Trainer.step

    def _raising_step(self, stream, step):
        if os.environ["RLVR_FAULT_RAISE"] == f"{self.topo.rank}:{step}":
            raise RuntimeError(f"injected failure on rank {self.topo.rank} at step {step} (RLVR_FAULT_RAISE)")
        return _step(self, stream, step)

    Trainer.step = _raising_step
