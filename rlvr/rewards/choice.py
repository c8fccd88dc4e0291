"""Multiple-choice answers: the letter a response commits to ("The answer is (C)", "Answer: C", ...).

`parse_choice(response, n_choices)` reads, in order of trust:
1. the last explicit statement: "answer is (C)", "answer: C", "correct option is C", "\\boxed{C}",
   "**Answer:** C", "final answer: (c)" (any case for the words; the letter upper case, or any case
   in parentheses);
2. else a last line that is a letter alone ("C", "(C)", "C.", "**C**");
3. else a response that starts with the letter and a delimiter ("C) Paris", "C. Paris", "(C)").
A bare capital inside a sentence ("A cat ...") is never read as an answer. Only the first
`n_choices` letters count (A-D for four options). None when nothing matches.

`choice_reward(response, answer)` is 1.0 when the parsed letter equals the gold letter.
"""

from __future__ import annotations

import functools
import re
import string

from rlvr.rewards.base import REWARDS

LETTERS = string.ascii_uppercase


def _letter_class(n_choices: int) -> str:
    if not 2 <= n_choices <= 26:
        raise ValueError(f"n_choices must be in [2, 26]; got {n_choices}")
    return f"[A-{LETTERS[n_choices - 1]}]"


@functools.lru_cache(maxsize=None)
def _patterns(n_choices: int) -> tuple[re.Pattern, re.Pattern, re.Pattern]:
    L = _letter_class(n_choices)
    letter = rf"(?:\(\s*((?i:{L}))\s*\)|\*\*\s*({L})\s*\*\*|({L}))(?![A-Za-z0-9])"
    explicit = re.compile(
        r"(?:(?i:answer|option|choice)\s*(?:is|would\s+be|should\s+be|=|:)?\s*(?:\*\*)?\s*:?\s*(?:\*\*)?\s*"
        rf"(?i:option\s+|choice\s+)?{letter}"
        rf"|\\boxed\{{\s*(?:\\text\{{)?\s*({L})\s*\}}?\s*\}})"
    )
    alone = re.compile(rf"^\s*(?:\*\*)?\s*(?:\(\s*((?i:{L}))\s*\)|({L}))\s*[.):]?\s*(?:\*\*)?\s*\.?\s*$")
    leading = re.compile(rf"^\s*(?:\(\s*({L})\s*\)|({L})\s*[.):])(?:\s|$)")
    return explicit, alone, leading


def parse_choice(response: str, n_choices: int = 4) -> str | None:
    """The option letter `response` answers with, or None (see the module docstring).

    >>> [parse_choice(s) for s in ("The answer is (C).", "Answer: b", "answer: (b)", "**Answer:** D", "I think\\n(B)")]
    ['C', None, 'B', 'D', 'B']
    >>> [parse_choice(s) for s in ("A cat sat.", "C) Paris", "answer is E", r"so \\boxed{A}")]
    [None, 'C', None, 'A']
    """
    explicit, alone, leading = _patterns(n_choices)
    found = [_first(m) for m in explicit.finditer(response)]
    if found:
        return found[-1]
    lines = [line for line in response.strip().splitlines() if line.strip()]
    if lines:
        m = alone.match(lines[-1])
        if m:
            return _first(m)
    m = leading.match(response)
    return _first(m) if m else None


def _first(match: re.Match) -> str:
    return next(g for g in match.groups() if g).upper()


def choice_reward(response: str, answer: str, *, n_choices: int = 4) -> float:
    """1.0 if the response's letter is the gold letter `answer` ("C"), else 0.0.

    >>> choice_reward("After checking each option, the answer is (B).", "B")
    1.0
    """
    gold = str(answer).strip().upper()
    return 1.0 if parse_choice(response, max(n_choices, LETTERS.index(gold) + 1 if gold in LETTERS else 2)) == gold else 0.0


REWARDS.register("choice")(choice_reward)
