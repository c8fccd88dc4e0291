"""Reasoning-behaviour metrics of responses (tracked by the R1-Zero pilot study and Logic-RL).

- `reflection_rate`: the fraction of responses containing at least one reflection phrase ("wait",
  "let me check", "verify", ...; case-insensitive, whole words; the list is configurable).
- `think_rate`: the fraction of responses with a thinking block: text between `<think>` and
  `</think>`, or before `</think>` when the template put `<think>` in the prompt (R1-Zero's).
- `think_len_mean`: the mean length, in tokens, of those blocks (None when no response has one).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

REFLECTION_PHRASES = (
    "wait", "let me check", "let me verify", "verify", "double-check", "double check", "re-check", "recheck",
    "let me re-examine", "on second thought", "hmm",
)


def think_block(response: str) -> str | None:
    """The text of the response's thinking block, or None."""
    end = response.find("</think>")
    if end < 0:
        return None
    start = response.rfind("<think>", 0, end)
    return response[start + len("<think>") : end] if start >= 0 else response[:end]


def _pattern(phrases: Sequence[str]) -> re.Pattern | None:
    words = [p.strip() for p in phrases if p.strip()]
    if not words:
        return None
    return re.compile(r"(?<![\w-])(?:" + "|".join(re.escape(w) for w in words) + r")(?![\w-])", re.IGNORECASE)


def behaviour_metrics(
    responses: Sequence[str], count_tokens: Callable[[str], int] | None = None,
    phrases: Sequence[str] = REFLECTION_PHRASES,
) -> dict[str, float | None]:
    """reflection_rate, think_rate and think_len_mean of `responses` (see the module docstring).

    `count_tokens`: the tokenizer's length of a text (default: whitespace-separated words).
    """
    if not responses:
        return {"reflection_rate": None, "think_rate": None, "think_len_mean": None}
    pattern = _pattern(phrases)
    count = count_tokens or (lambda text: len(text.split()))
    reflective = sum(bool(pattern and pattern.search(r)) for r in responses)
    blocks = [b for b in (think_block(r) for r in responses) if b is not None]
    return {
        "reflection_rate": reflective / len(responses),
        "think_rate": len(blocks) / len(responses),
        "think_len_mean": (sum(count(b) for b in blocks) / len(blocks)) if blocks else None,
    }
