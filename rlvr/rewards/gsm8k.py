"""GSM8K-style numeric answers: "#### 72" in the gold solution, a number at the end of a response.

GSM8K (Cobbe et al., 2021) ends each reference solution with "#### <number>". A response is graded
by its final number: the one after its last "####" if it wrote one, else its last \\boxed{...}, else
the last number anywhere in it. Numbers compare exactly as rationals after removing thousands
commas, a leading "$" and a trailing "." ("1,000" == "1000.0"), never by float tolerance.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

from rlvr.rewards.base import REWARDS

# A number: digits with optional thousands commas and decimal part, or a bare decimal (".5"), with
# a sign only where it cannot be a binary minus ("10-2" ends in 2, not -2). Commas are removed later.
_NUMBER = re.compile(r"(?:(?<![\w)\]])[-+])?(?:(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)")
_HASHES = re.compile(r"####\s*([^\n]*)")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_MAX_NUMBER_CHARS = 100  # longer "numbers" are junk; Fraction on them would be slow for no gain


def parse_number(text: str | int | float | None) -> Fraction | None:
    """`text` as an exact rational, or None. Accepts "1,234", "$5", "-3.50", "7.", "2/3", 4.

    >>> parse_number("1,234.50")
    Fraction(2469, 2)
    >>> parse_number("$18.") == 18
    True
    >>> parse_number("eighteen") is None
    True
    """
    if text is None or isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        return Fraction(text)
    s = str(text).strip().replace(",", "").replace("$", "").rstrip(".").strip()
    if not s or len(s) > _MAX_NUMBER_CHARS:
        return None
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def last_number(text: str) -> str | None:
    """The last number in `text` as written, with thousands commas removed, or None.

    >>> last_number("She pays 3 * $1,250 = $3,750.")
    '3750'
    >>> last_number("The answer is -0.5")
    '-0.5'
    >>> last_number("no digits") is None
    True
    """
    matches = _NUMBER.findall(text)
    return matches[-1].replace(",", "") if matches else None


def extract_gsm8k_answer(text: str) -> str | None:
    """The number after the last "####" in `text` (commas removed), or None if there is none.

    >>> extract_gsm8k_answer("Janet sells 9 eggs.\\n#### 1,018")
    '1018'
    >>> extract_gsm8k_answer("no marker 18") is None
    True
    """
    matches = _HASHES.findall(text)
    if not matches:
        return None
    found = _NUMBER.search(matches[-1])
    return found.group(0).replace(",", "") if found else None


def response_number(response: str) -> str | None:
    """The final answer a response gives: after "####", else in the last \\boxed{}, else its last number."""
    if "####" in response:
        return extract_gsm8k_answer(response)
    boxed = _BOXED.findall(response)
    if boxed:
        return last_number(boxed[-1])
    return last_number(response)


def numbers_equal(a: Any, b: Any) -> bool:
    """Exact rational equality of two numbers given as text or numbers; False if either is not one."""
    x, y = parse_number(a), parse_number(b)
    return x is not None and y is not None and x == y


def gsm8k_reward(response: str, answer: Any) -> float:
    """1.0 if the response's final number equals the gold `answer`, else 0.0.

    `answer` is the gold number ("18", 18) or a whole GSM8K solution ending in "#### 18".

    >>> gsm8k_reward("3 + 4 = 7 eggs, so 16 - 7 = 9 and 9 * 2 = 18.\\n#### 18", "18")
    1.0
    >>> gsm8k_reward("The answer is $18.00.", "Janet sells 9 eggs ...\\n#### 18")
    1.0
    >>> gsm8k_reward("I get \\\\boxed{17}", 18)
    0.0
    """
    gold = extract_gsm8k_answer(answer) if isinstance(answer, str) and "####" in answer else answer
    return 1.0 if numbers_equal(response_number(response), gold) else 0.0


def last_number_reward(response: str, answer: Any) -> float:
    """1.0 if the last number in the response equals `answer` exactly, else 0.0.

    >>> last_number_reward("3 + 5 = 8", 8)
    1.0
    >>> last_number_reward("8, no wait, 9", 8)
    0.0
    """
    return 1.0 if numbers_equal(last_number(response), answer) else 0.0


REWARDS.register("gsm8k")(gsm8k_reward)
REWARDS.register("last_number")(last_number_reward)
