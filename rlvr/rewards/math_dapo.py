"""DAPO's math reward: the value after the last "Answer:" must match the gold string (Yu et al., 2025).

DAPO (arXiv 2503.14476, sec. 4.1) trains on DAPO-Math-17k, whose prompts ask for a last line
"Answer: $Answer", and scores a response +1 if that answer is right and -1 otherwise. The rule here
is that of verl's `verl/utils/reward_score/math_dapo.py` (the scorer of verl's DAPO recipe, in its
default, non-strict mode), step by step:

1. Only the last 300 characters of the response are read.
2. The answer is the rest of the line after the last match of `Answer\\s*:\\s*` (any case; "Final
   Answer:" matches too, and the spaces after the colon may include line breaks). No match: wrong.
3. The answer and the gold are both normalised (`normalize_dapo_answer`), then compared as strings.
   Normalisation keeps what follows the last "=", deletes "a " and "an ", "\\$", "\\ " and every
   space, replaces "mbox" by "text" and "\\text{and}" by ",", deletes a fixed list of unit words and
   LaTeX fragments (`DAPO_REMOVED`: "square", "ways", "dollars", "cm", "\\text{}", "^\\circ", ...),
   keeps only the first $...$ span of a line, unwraps \\text{}, \\textbf{}, \\overline{} and \\boxed{},
   rewrites the shorthand "\\frac12" as "\\frac{1}{2}" and "\\sqrt2" as "\\sqrt{2}", deletes "$", and
   removes the commas of a number written only with digits and commas ("1,000" -> "1000").

So "Answer: 142" followed by "This took 3 steps." is right, while a response without an "Answer:"
line, "Answer: wrong or 12", "Answer: 12%", "Answer: 12 apples" and a line cut off after the value
("Answer: 12 because we") are wrong for gold "12": nothing but the listed fragments is removed. The
words deleted are deleted anywhere, inside other words too ("Answer: 4 units" is 4, and so is "4
squares" with "square" deleted: "4s" then, which is wrong).

Strict-box mode (`strict_box=True`, verl's `strict_box_verify`): the last \\boxed{...} (braces
balanced) within the last 100 of those 300 characters, compared with the gold string as it is, without
any normalisation. verl's DAPO recipe does not use it; it is here for the evaluations that do.

Scale: +1.0 right, -1.0 wrong, as DAPO's (verl returns {"score": +-1, "acc": bool}). rlvr reads
`correct` as reward >= 1, so pass@k is unaffected, and DAPO's overlong penalty (0 to -1, rlvr's
`algorithm.overlong`) weighs against a right-wrong gap of 2 as in DAPO. Under a task's
`answer_in_tags`, a response without an <answer> tag scores 0 (the task's rule), not -1: DAPO reads
"Answer:" lines, so use this reward without tags.
"""

from __future__ import annotations

import re
from typing import Any

from rlvr.rewards.base import REWARDS

DAPO_TAIL_CHARS = 300
DAPO_BOX_TAIL_CHARS = 100

DAPO_REPLACED = (
    ("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), ("\\ ", ""), (" ", ""), ("mbox", "text"),
    (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}"),
)
"""(old, new) replacements of DAPO's normalisation, applied in this order (plain text, not regexes)."""

DAPO_REMOVED = (
    "square", "ways", "integers", "dollars", "mph", "inches", "hours", "km", "units", "\\ldots", "sue",
    "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters", "meals",
    "edges", "students", "childrentickets", "multiples", "\\text{s}", "\\text{.}", "\\text{\ns}",
    "\\text{}^2", "\\text{}^3", "\\text{\n}", "\\text{}", "\\mathrm{th}", "^\\circ", "^{\\circ}", "\\;",
    ",\\!", "{,}", '"', "\\dots",
)
"""Fragments DAPO's normalisation deletes wherever they occur, in this order, after `DAPO_REPLACED`."""

_ANSWER_LINE = re.compile(r"answer\s*:\s*([^\n]+)", re.IGNORECASE)
_FIRST_MATH_SPAN = re.compile(r"[^\n]*?\$([^\n]*?)\$[^\n]*")  # a line with $x$ in it becomes $x$
_UNWRAP = (
    re.compile(r"\\text\{(.*?)\}"),
    re.compile(r"\\textbf\{(.*?)\}"),
    re.compile(r"\\overline\{(.*?)\}"),
    re.compile(r"\\boxed\{(.*)\}"),  # greedy: to the last "}"
)
_FRAC_SHORTHAND = re.compile(r"frac([^{])(.)")
_SQRT_SHORTHAND = re.compile(r"sqrt([^{])")


def normalize_dapo_answer(text: str) -> str:
    """DAPO's normal form of an answer (see the module docstring); equal forms are equal answers.

    >>> [normalize_dapo_answer(s) for s in ("x = 1,000", "$\\\\frac12$", "\\\\boxed{5}", "12 apples", "4 units")]
    ['1000', '\\\\frac{1}{2}', '5', '12apples', '4']
    """
    s = text.split("=")[-1]
    for old, new in DAPO_REPLACED:
        s = s.replace(old, new)
    for fragment in DAPO_REMOVED:
        s = s.replace(fragment, "")
    s = _FIRST_MATH_SPAN.sub(r"$\1$", s)
    for pattern in _UNWRAP:
        s = pattern.sub(r"\1", s)
    s = _FRAC_SHORTHAND.sub(r"frac{\1}{\2}", s)
    s = _SQRT_SHORTHAND.sub(r"sqrt{\1}", s)
    s = s.replace("$", "")
    if s.replace(",", "").isdigit():
        s = s.replace(",", "")
    return s.strip()


def extract_dapo_answer(response: str) -> str | None:
    """The normalised answer DAPO reads from `response`, or None without an "Answer:" in its last 300 characters.

    >>> extract_dapo_answer("3 + 4 = 7, times 2.\\nAnswer: 14\\nThat took two steps.")
    '14'
    >>> extract_dapo_answer("The answer is 14.") is None
    True
    """
    found = _ANSWER_LINE.findall(response[-DAPO_TAIL_CHARS:])
    return normalize_dapo_answer(found[-1]) if found else None


def last_boxed_content(text: str) -> str | None:
    """The content of the last "\\boxed{" in `text` up to its balancing "}", or None if it is not closed.

    >>> last_boxed_content("\\\\boxed{1} then \\\\boxed{\\\\frac{1}{2}}")
    '\\\\frac{1}{2}'
    """
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth = 0
    for i in range(start + len("\\boxed"), len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + len("\\boxed{") : i]
    return None


def extract_dapo_boxed(response: str) -> str | None:
    """Strict-box mode's answer: the last closed \\boxed{} in the last 100 of the last 300 characters, as written."""
    return last_boxed_content(response[-DAPO_TAIL_CHARS:][-DAPO_BOX_TAIL_CHARS:])


def math_dapo_reward(response: str, answer: Any, *, strict_box: bool = False) -> float:
    """+1.0 if DAPO's answer of `response` equals the gold `answer`, else -1.0 (see the module docstring).

    >>> math_dapo_reward("3 + 4 = 7, times 2 is 14.\\nAnswer: 14\\nThat took two steps.", "14")
    1.0
    >>> math_dapo_reward("3 + 4 = 7, times 2 is 14.", "14"), math_dapo_reward("Answer: 14 apples", "14")
    (-1.0, -1.0)
    >>> math_dapo_reward("so \\\\boxed{14}", 14, strict_box=True)
    1.0
    """
    gold = str(answer)
    if strict_box:
        return 1.0 if extract_dapo_boxed(response) == gold else -1.0
    pred = extract_dapo_answer(response)
    return 1.0 if pred is not None and pred == normalize_dapo_answer(gold) else -1.0


def dapo_answer_key(text: str) -> str | None:
    """The key majority voting uses with `math_dapo`: the normalised answer the grader compares."""
    return extract_dapo_answer(text)


def dapo_boxed_key(text: str) -> str | None:
    """The key majority voting uses with `math_dapo_strict_box`: the boxed text the grader compares."""
    return extract_dapo_boxed(text)


REWARDS.register("math_dapo")(math_dapo_reward)


@REWARDS.register("math_dapo_strict_box")
def _math_dapo_strict_box(response: str, answer: Any) -> float:
    return math_dapo_reward(response, answer, strict_box=True)
