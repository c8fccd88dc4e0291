"""Countdown: combine the given numbers with + - * / to reach a target (TinyZero, Pan et al., 2025).

The expression is the content of the last `<answer>...</answer>` if the response has one, else its
last non-empty line. If it contains "=", only the left-hand side is the expression ("(6+4)*3 = 30").
It is evaluated by `rlvr.rewards.arithmetic` (an `ast` whitelist over exact fractions; never `eval`).

Departure from TinyZero: TinyZero's verifier requires every number to be used exactly once; here
each number may be used at most once unless `use_all=True`. Reasoning-gym's countdown also
requires all numbers; pass `use_all=True` to match either.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from rlvr.rewards.arithmetic import UnsafeExpression, constants, evaluate_arithmetic, normalize_expression, parse_arithmetic
from rlvr.rewards.base import REWARDS
from rlvr.rewards.format import extract_answer_tag


def extract_countdown_expression(response: str) -> str | None:
    """The candidate expression of a response (see the module docstring), or None if it is empty.

    >>> extract_countdown_expression("<think>...</think><answer>(6 + 4) * 3 = 30</answer>")
    '(6 + 4) * 3'
    >>> extract_countdown_expression("Let me try.\\n6 * 5\\n")
    '6 * 5'
    """
    text = extract_answer_tag(response)
    if text is None:
        lines = [line for line in response.splitlines() if line.strip()]
        if not lines:
            return None
        text = lines[-1]
    text = text.split("=", 1)[0].strip().rstrip(".").strip()
    return text or None


def check_countdown(expression: str, numbers: Sequence[int], target: int, *, use_all: bool = False) -> str | None:
    """Why `expression` fails the puzzle, or None if it is a solution. Never executes the text."""
    try:
        text = normalize_expression(expression)
        used = constants(parse_arithmetic(text))
        value = evaluate_arithmetic(text)
    except UnsafeExpression as e:
        return f"not a valid expression: {e}"
    available, wanted = Counter(int(n) for n in numbers), Counter(used)
    if wanted - available:
        extra = sorted((wanted - available).elements())
        return f"uses numbers not available (or more often than given): {extra}"
    if use_all and wanted != available:
        return f"does not use every number; unused: {sorted((available - wanted).elements())}"
    if value != target:
        return f"evaluates to {value}, not {target}"
    return None


def countdown_reward(response: str, numbers: Sequence[int], target: int, *, use_all: bool = False) -> float:
    """1.0 if the response's expression uses only `numbers` (each at most once) and equals `target`.

    >>> countdown_reward("<answer>(6 + 4) * 3</answer>", [3, 4, 6, 9], 30)
    1.0
    >>> countdown_reward("<answer>(6 + 4) * 3 * 3</answer>", [3, 4, 6, 9], 90)
    0.0
    >>> countdown_reward("__import__('os').system('echo hacked')", [1, 2], 3)
    0.0
    """
    expression = extract_countdown_expression(response)
    if expression is None:
        return 0.0
    return 1.0 if check_countdown(expression, numbers, target, use_all=use_all) is None else 0.0


@REWARDS.register("countdown")
def _countdown(response: str, answer: Any) -> float:
    """`answer` is {"numbers": [...], "target": t} (optionally "use_all": bool)."""
    if not isinstance(answer, Mapping) or "numbers" not in answer or "target" not in answer:
        raise ValueError(f"the countdown reward needs answer={{'numbers': [...], 'target': int}}; got {answer!r}")
    return countdown_reward(response, answer["numbers"], answer["target"], use_all=bool(answer.get("use_all", False)))
