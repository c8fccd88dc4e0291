"""Small rewards: exact string match, and the symbol-repetition reward of the `symbol` learning task."""

from __future__ import annotations

from typing import Any

from rlvr.rewards.base import REWARDS, RewardResult


def exact_reward(response: str, answer: Any) -> float:
    """1.0 if the stripped response equals `str(answer)` stripped (case-sensitive), else 0.0.

    >>> exact_reward("  Paris\\n", "Paris")
    1.0
    >>> exact_reward("paris", "Paris")
    0.0
    """
    return 1.0 if response.strip() == str(answer).strip() else 0.0


def symbol_reward(response: str, symbol: str, *, max_len: int = 8) -> RewardResult:
    """Dense reward for repeating one character: share of `max_len` slots filled with `symbol`.

    reward = #{i < max_len : c_i == symbol} / max_len, where c_0, c_1, ... are the response's
    non-whitespace characters. The denominator is fixed, so "b" scores 1/8 and "bbbbbbbb" 1; wrong
    characters earn nothing; characters past `max_len` are ignored. It is dense on purpose: a tiny
    random model gets signal from its first matching character and learns in seconds.
    correct: the first non-whitespace character is `symbol` (what a greedy answer "b" would be).

    >>> symbol_reward("b b x b", "b")
    RewardResult(reward=0.375, correct=True, components={'symbol': 0.375})
    >>> symbol_reward("xbbb", "b").correct
    False
    """
    if len(symbol) != 1:
        raise ValueError(f"symbol must be one character; got {symbol!r}")
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1; got {max_len}")
    chars = "".join(response.split())[:max_len]
    reward = sum(c == symbol for c in chars) / max_len
    return RewardResult(reward=reward, correct=chars[:1] == symbol, components={"symbol": reward})


REWARDS.register("exact")(exact_reward)


@REWARDS.register("symbol")
def _symbol(response: str, answer: Any) -> float:
    return symbol_reward(response, str(answer)).reward
