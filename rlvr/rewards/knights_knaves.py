"""Knights and knaves: every inhabitant's role must be right (Logic-RL, Xie et al., 2025).

Answer format parsed: statements "NAME is a ROLE" / "NAME is an ROLE" (case-insensitive, any
separators: "Zoey is a knight, and Ethan is a knave."). ROLE is a truth-teller word (knight,
pioneer, saint, hero, angel, altruist, sage, truth-teller) or a liar word (knave, laggard, sinner,
villain, devil, egoist, fool, liar); these are the role pairs reasoning-gym's generator uses, so
a puzzle about saints and sinners is answered in those words. "X is not a knight" is not a
statement about X (the negation breaks the pattern), and neither are "X is a knight/knave" (the
format line of the prompt, copied) or "X is a knight or a knave". The text parsed is the whole last
`<answer>` block when the response has one, every line of it: Logic-RL's answers list one person per
line ("(1) Zoey is a knight" / "(2) Ethan is a knave"), and reasoning-gym's scorer reads the whole
tag too. Without a tag it is the response's last non-empty line (reasoning-gym's prompt asks for a
one-line answer "A is a knight, B is a knave, and C is a knight"), as for countdown. A task that
grades only the <answer> tag (`answer_in_tags`) passes the tag's content, all of which is read
(`whole_text=True`).

The answer is correct when every person in the solution gets exactly one role (statements that
contradict each other for the same person count as wrong: no hedging) and it matches. Names not in
the solution are ignored. Logic-RL scores a wrong or unparsable answer negatively (-1.5 / -2);
this reward is 1.0 / 0.0 and the scale belongs to `CompositeReward` weights.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from rlvr.rewards.base import REWARDS
from rlvr.rewards.format import extract_answer_tag

TRUTH_TELLERS = ("knight", "pioneer", "saint", "hero", "angel", "altruist", "sage", "truth-teller", "truthteller")
LIARS = ("knave", "laggard", "sinner", "villain", "devil", "egoist", "fool", "liar")
_ROLE_IS_TRUTHFUL = {**{w: True for w in TRUTH_TELLERS}, **{w: False for w in LIARS}}
_STATEMENT = re.compile(
    r"\b([A-Za-z][\w'-]*)\s+is\s+an?\s+(" + "|".join(map(re.escape, _ROLE_IS_TRUTHFUL)) + r")s?\b"
    r"(?!\s*/)(?!\s+or\b)",  # "A is a knight/knave" (the prompt's format line) or "... or a knave" claims nothing
    re.IGNORECASE,
)


def parse_knights_knaves(text: str) -> dict[str, bool | None]:
    """Map each name stated in `text` to True (truth-teller), False (liar) or None (contradictory).

    Names are lower-cased.

    >>> parse_knights_knaves("Zoey is a knight, and Ethan is a Knave.")
    {'zoey': True, 'ethan': False}
    >>> parse_knights_knaves("Ella is an angel. Ella is a devil.")
    {'ella': None}
    """
    out: dict[str, bool | None] = {}
    for name, role in _STATEMENT.findall(text):
        key, truthful = name.lower(), _ROLE_IS_TRUTHFUL[role.lower()]
        out[key] = truthful if out.get(key, truthful) == truthful else None
    return out


def _solution_map(solution: Any) -> dict[str, bool]:
    if isinstance(solution, str):
        parsed = parse_knights_knaves(solution)
        if not parsed or any(v is None for v in parsed.values()):
            raise ValueError(f"cannot read a knights-and-knaves solution from {solution!r}; "
                             "expected e.g. 'Zoey is a knight, and Ethan is a knave.'")
        return parsed  # type: ignore[return-value]
    if isinstance(solution, Mapping):
        out = {}
        for name, role in solution.items():
            if isinstance(role, bool):
                out[str(name).lower()] = role
            elif isinstance(role, str) and role.lower() in _ROLE_IS_TRUTHFUL:
                out[str(name).lower()] = _ROLE_IS_TRUTHFUL[role.lower()]
            else:
                raise ValueError(f"role of {name!r} must be a bool (True = knight) or a role word; got {role!r}")
        return out
    raise TypeError(f"solution must be a str or a dict name -> bool/role; got {type(solution).__name__}")


def knights_knaves_answer_text(response: str, *, whole_text: bool = False) -> str:
    """The part of `response` that is graded: all of it if `whole_text` (it is already the content of
    an <answer> tag), else the whole last <answer> block, else the last non-empty line.

    >>> knights_knaves_answer_text("<answer>(1) A is a knight\\n(2) B is a knave</answer>")
    '(1) A is a knight\\n(2) B is a knave'
    >>> knights_knaves_answer_text("If A is a knave...\\nA is a knight, B is a knave")
    'A is a knight, B is a knave'
    """
    if whole_text:
        return response
    text = extract_answer_tag(response)
    if text is None:
        lines = [line for line in response.splitlines() if line.strip()]
        text = lines[-1] if lines else ""
    return text


def knights_knaves_reward(
    response: str, solution: str | Mapping[str, bool | str], *, whole_text: bool = False
) -> float:
    """1.0 if the response assigns every person in `solution` their right role, else 0.0.

    `solution` is the reference answer text ("Zoey is a knight, and Ethan is a knave.") or a dict
    name -> True/False (True = truth-teller) or name -> role word. `whole_text`: the response is
    already the answer (the content of its <answer> tag): every line of it is read.

    >>> knights_knaves_reward("<answer>Zoey is a knight, Ethan is a knave</answer>", {"Zoey": True, "Ethan": False})
    1.0
    >>> knights_knaves_reward("Zoey is a knight.", "Zoey is a knight, and Ethan is a knave.")
    0.0
    >>> knights_knaves_reward("(1) Zoey is a knight\\n(2) Ethan is a knave", {"Zoey": True, "Ethan": False}, whole_text=True)
    1.0
    """
    gold = _solution_map(solution)
    said = parse_knights_knaves(knights_knaves_answer_text(response, whole_text=whole_text))
    return 1.0 if all(name in said and said[name] == role for name, role in gold.items()) else 0.0


REWARDS.register("knights_knaves")(knights_knaves_reward)
