"""Symbol: "#07 Say: b" -> "bbbbbbbb". A task a tiny random model learns in seconds.

For the trainer's learning tests. The prompt ends with the symbol to repeat, so the model only has
to learn to copy its last prompt character; the reward is dense (rlvr.rewards.simple.symbol_reward:
the share of the first `max_len` non-whitespace characters equal to the symbol) and `correct` is
"the first non-whitespace character is the symbol".

The tag (`n_variants` per symbol, "#00" .. "#24") exists only so that held-out
prompts differ from training prompts: the split is made per symbol (every symbol appears in both
splits, with different tags), by hash, with round(test_fraction * n_variants) tags held out.
All prompt characters are in the tiny test tokenizer's alphabet (rlvr.models.tiny).
"""

from __future__ import annotations

import random
from typing import Any

from rlvr.rewards.base import RewardResult
from rlvr.rewards.simple import symbol_reward
from rlvr.tasks.base import TASKS, Example, Task, repeat_to_size, split_by_hash


@TASKS.register("symbol")
class SymbolTask(Task):
    name = "symbol"
    max_new_tokens = 64
    default_template = "plain"

    def __init__(
        self,
        *,
        symbols: str = "abcd",
        n_variants: int = 25,
        max_len: int = 8,
        train_size: int | None = None,
        test_size: int | None = None,
        test_fraction: float = 0.2,
        seed: int = 0,
        **common: Any,
    ):
        """train_size / test_size None: every problem of the split once."""
        super().__init__(**common)
        if len(symbols) < 1 or len(set(symbols)) != len(symbols) or any(c.isspace() for c in symbols):
            raise ValueError(f"symbols must be distinct non-whitespace characters; got {symbols!r}")
        if n_variants < 2:
            raise ValueError(f"n_variants must be >= 2 so that each symbol has train and test prompts; got {n_variants}")
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}")
        self.symbols, self.n_variants, self.max_len = symbols, n_variants, max_len
        self.sizes = {"train": train_size, "test": test_size}
        self.test_fraction, self.seed = test_fraction, seed

    def _build(self, split: str) -> list[Example]:
        width = len(str(self.n_variants - 1))
        pool = []
        for sym in self.symbols:
            tags = [f"#{k:0{width}d}" for k in range(self.n_variants)]
            for tag in split_by_hash(tags, self.test_fraction, salt=f"symbol/{sym}")[split]:
                pool.append(Example(id=f"symbol:{tag}{sym}", question=f"{tag} Say: {sym}", answer=sym))
        pool.sort(key=lambda ex: ex.id)
        random.Random(f"{self.seed}/{split}").shuffle(pool)
        return repeat_to_size(pool, self.sizes[split])

    def answer_reward(self, response: str, answer: Any) -> RewardResult:
        return symbol_reward(response, answer, max_len=self.max_len)

    def canonical_answer(self, text: str) -> str | None:
        return symbol_answer_key(text)


def symbol_answer_key(text: str) -> str | None:
    """The first non-whitespace character, the one `correct` is judged on.

    >>> symbol_answer_key("  b bx"), symbol_answer_key(" ")
    ('b', None)
    """
    stripped = text.lstrip()
    return stripped[0] if stripped else None
