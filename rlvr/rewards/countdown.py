"""Countdown: combine the given numbers with + - * / to reach a target (TinyZero, Pan et al., 2025).

The answer is the content of the last `<answer>...</answer>` if the response has one, else its last
non-empty line; a final "." is removed from it without comment ("(6 + 4) * 3." is "(6 + 4) * 3").
It is an expression, or "expression = value": the value must then be a number equal to the
expression's own value ("(6 + 4) * 3 = 30" is the expression (6 + 4) * 3; "(6 + 4) * 3 = 31" is
refused, whatever the target; so is a second "="). The expression is evaluated by
`rlvr.rewards.arithmetic` (an `ast` whitelist over exact fractions; never `eval`).

Intentional differences from TinyZero's scorer (`verl/utils/reward_score/countdown.py` of
github.com/Jiayi-Pan/TinyZero):
- Where the answer is read. TinyZero reads only the response's last line (the text after its last
  line break: a response that ends with a line break, or whose <answer> block spans lines, has no
  answer) and the last <answer>...</answer> on it; an untagged answer scores 0. rlvr reads the last
  <answer> block anywhere, else the last non-empty line, untagged (tasks that grade only tags, with
  `answer_in_tags`, score an untagged response 0 and pass the tag's content, of which this reward
  reads the last non-empty line).
- Symbols. TinyZero accepts only digits, + - * / ( ) . and spaces. rlvr also reads the usual
  multiplication and division signs (× · \\times \\cdot as *, ÷ \\div as /) and the unicode minus as
  -, and drops $, \\( \\) and the \\left \\right of parentheses.
- Numbers. TinyZero counts every run of digits as a number ("3.5" uses 3 and 5) and evaluates in
  floating point, right within 1e-5; rlvr accepts integer literals only and compares exact fractions.
- "=". TinyZero's character check refuses any "=" (a wrong answer); rlvr accepts "expression =
  value" when the value is right (see above).
- A final ".". rlvr removes it; TinyZero evaluates "... * 4." as the float 4.0 (right by accident)
  and fails on "... )." (a wrong answer).
- Which numbers. TinyZero requires every number exactly once; here each number may be used at most
  once unless `use_all=True` (the TinyZero recipes set it). Reasoning-gym's countdown also requires
  all numbers.
- Score scale. TinyZero returns 1.0 for a right answer, 0.1 (its format score) for a wrong answer in
  tags on the last line, 0 without one; the two never add. This reward is 1.0 / 0.0; a task adds
  `format_weight` x the R1 format reward (rlvr.rewards.format), so with TinyZero's weight 0.1 a
  right answer in the strict R1 format scores 1.1, a right one outside it 1.0, a wrong one in it
  0.1, and a wrong tagged one outside it 0 (TinyZero: 0.1). Division by zero is a wrong answer
  in both (TinyZero: 0.1).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from rlvr.rewards.arithmetic import UnsafeExpression, constants, evaluate_arithmetic, normalize_expression, parse_arithmetic
from rlvr.rewards.base import REWARDS
from rlvr.rewards.format import extract_answer_tag
from rlvr.rewards.gsm8k import parse_number


def extract_countdown_answer(response: str) -> tuple[str, str | None] | None:
    """(expression, the value stated after "=" or None) of a response (see the module docstring), or
    None if it is empty. The stated value is the text after the first "=", as written.

    >>> extract_countdown_answer("<think>...</think><answer>(6 + 4) * 3 = 30.</answer>")
    ('(6 + 4) * 3', '30')
    >>> extract_countdown_answer("Let me try.\\n6 * 5\\n")
    ('6 * 5', None)
    """
    text = extract_answer_tag(response)
    if text is None:
        lines = [line for line in response.splitlines() if line.strip()]
        if not lines:
            return None
        text = lines[-1]
    text = text.strip().rstrip(".").strip()
    expression, eq, stated = text.partition("=")
    expression = expression.strip()
    if not expression:
        return None
    return expression, stated.strip() if eq else None


def extract_countdown_expression(response: str) -> str | None:
    """The candidate expression of a response: the left-hand side of "=" if any, or None if it is empty.

    >>> extract_countdown_expression("<think>...</think><answer>(6 + 4) * 3 = 30</answer>")
    '(6 + 4) * 3'
    >>> extract_countdown_expression("Let me try.\\n6 * 5\\n")
    '6 * 5'
    """
    found = extract_countdown_answer(response)
    return found[0] if found else None


def check_countdown(
    expression: str, numbers: Sequence[int], target: int, *, use_all: bool = False, stated: str | None = None
) -> str | None:
    """Why `expression` fails the puzzle, or None if it is a solution. Never executes the text.

    `stated`: the value the answer claims after "=" (None: no "="); it must equal the expression's value.
    """
    try:
        text = normalize_expression(expression)
        used = constants(parse_arithmetic(text))
        value = evaluate_arithmetic(text)
    except UnsafeExpression as e:
        return f"not a valid expression: {e}"
    if stated is not None:
        claimed = parse_number(stated)
        if claimed is None:
            return f"the right-hand side {stated!r} is not a number"
        if claimed != value:
            return f"states {stated} but the expression evaluates to {value}"
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

    An answer "expression = value" also needs value to be the expression's value (module docstring).

    >>> countdown_reward("<answer>(6 + 4) * 3</answer>", [3, 4, 6, 9], 30)
    1.0
    >>> countdown_reward("<answer>(6 + 4) * 3 * 3</answer>", [3, 4, 6, 9], 90)
    0.0
    >>> countdown_reward("<answer>(6 + 4) * 3 = 31</answer>", [3, 4, 6, 9], 30)
    0.0
    >>> countdown_reward("__import__('os').system('echo hacked')", [1, 2], 3)
    0.0
    """
    found = extract_countdown_answer(response)
    if found is None:
        return 0.0
    expression, stated = found
    return 1.0 if check_countdown(expression, numbers, target, use_all=use_all, stated=stated) is None else 0.0


@REWARDS.register("countdown")
def _countdown(response: str, answer: Any) -> float:
    """`answer` is {"numbers": [...], "target": t} (optionally "use_all": bool)."""
    if not isinstance(answer, Mapping) or "numbers" not in answer or "target" not in answer:
        raise ValueError(f"the countdown reward needs answer={{'numbers': [...], 'target': int}}; got {answer!r}")
    return countdown_reward(response, answer["numbers"], answer["target"], use_all=bool(answer.get("use_all", False)))
