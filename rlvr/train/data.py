"""The prompt stream of a run: seeded, epoch-wise shuffled, with a position that checkpoints restore."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rlvr.train.seeds import DATA, derive_seed


class PromptStream:
    """Yields examples in a fresh seeded permutation each epoch; `state_dict` is the data position."""

    def __init__(self, examples: Sequence[Any], seed: int):
        if not examples:
            raise ValueError("the task's train split is empty; nothing to train on")
        self.examples = list(examples)
        self.seed = seed
        self.epoch = 0
        self.index = 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        gen = torch.Generator().manual_seed(derive_seed(self.seed, DATA, epoch))
        return torch.randperm(len(self.examples), generator=gen).tolist()

    def take(self, k: int) -> list[Any]:
        out = []
        while len(out) < k:
            if self.index == len(self._order):
                self.epoch += 1
                self.index = 0
                self._order = self._permutation(self.epoch)
            out.append(self.examples[self._order[self.index]])
            self.index += 1
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._order = self._permutation(self.epoch)
