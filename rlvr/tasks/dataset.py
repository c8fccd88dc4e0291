"""Tasks read from data: JSONL files or Hugging Face hub datasets, with a named reward.

Where the rows come from (`source_rows`):
- a directory: `<dir>/train.jsonl` and `<dir>/test.jsonl`;
- a single JSONL file: split by a hash of each row's question (`test_fraction` held out), so the
  two splits never share a question;
- a hub dataset (`hub_id`, with `datasets` imported only then; it needs network access).
With two given splits, training rows whose question also appears in the test split are dropped
(their number is in `task.dropped_overlap`), so held-out questions are never trained on.

JSONL errors name the file and line: a malformed line, a line that is not a JSON object, and a
row missing a field (with the fields the row has).

Majority voting (`extract_answer`) follows the named reward: the final number in canonical form for
`gsm8k` and `last_number`, the expression's value and numbers for `countdown`, the assignment for
`knights_knaves`, the first character for `symbol`, the stripped text for `exact`, DAPO's normalised
"Answer:" value for `math_dapo` (its boxed text for `math_dapo_strict_box`), and for `math` a
string normalisation of the last \\boxed{} (else the last $...$ span, else the last number) that
needs no math-verify (`normalize_math_answer`). Other rewards vote on the whitespace-collapsed text.

With `answer_in_tags`, the reward and the vote get the content of the answer tag; `knights_knaves`
then reads all of it (every line), as its own rule does for a tagged response.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from rlvr.rewards.base import REWARDS
from rlvr.rewards.choice import parse_choice
from rlvr.rewards.gsm8k import last_number, response_number
from rlvr.rewards.knights_knaves import knights_knaves_reward
from rlvr.rewards.math_dapo import dapo_answer_key, dapo_boxed_key
from rlvr.tasks.base import TASKS, Example, Task, canonical_number, hash_unit
from rlvr.tasks.countdown import countdown_answer_key
from rlvr.tasks.knights_knaves import knights_knaves_answer_key
from rlvr.tasks.symbol import symbol_answer_key

Row = tuple[dict[str, Any], str]  # (row, where: "file.jsonl:12" or "hub:openai/gsm8k[test]#12")


def read_jsonl(path: str | Path) -> list[Row]:
    """The JSON objects of a JSONL file (blank lines skipped), each with its "path:line" location."""
    path = Path(path)
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append((row, f"{path}:{lineno}"))
    return rows


def field_of(row: dict[str, Any], name: str, where: str) -> Any:
    """`row[name]`, or a KeyError naming the field, the location and the fields the row has."""
    if name not in row:
        raise KeyError(f"{where}: missing field {name!r}; the row has fields: {', '.join(map(str, row)) or '(none)'}")
    return row[name]


def load_hub_rows(hub_id: str, config: str | None, split: str) -> list[Row]:
    """Rows of a Hugging Face hub dataset split (imports `datasets` lazily; needs network access)."""
    try:
        import datasets
    except ImportError:
        raise ImportError(
            f"loading {hub_id!r} from the hub needs the `datasets` package (pip install datasets); "
            "or pass path=... (a JSONL file or a directory with train.jsonl and test.jsonl)"
        ) from None
    ds = datasets.load_dataset(hub_id, config, split=split)
    return [(dict(row), f"hub:{hub_id}[{split}]#{i}") for i, row in enumerate(ds)]


def source_rows(
    split: str,
    *,
    path: str | None,
    hub_id: str | None,
    hub_config: str | None,
    hub_splits: dict[str, str],
    question_field: str,
    test_fraction: float,
) -> tuple[list[Row], int]:
    """(rows of `split`, number of training rows dropped as duplicates of test questions)."""

    def load(s: str) -> list[Row]:
        if path is None:
            return load_hub_rows(hub_id, hub_config, hub_splits[s])  # type: ignore[arg-type]
        file = Path(path) / f"{s}.jsonl"
        if not file.is_file():
            present = sorted(p.name for p in Path(path).glob("*.jsonl"))
            raise FileNotFoundError(f"{file} not found; a dataset directory needs train.jsonl and test.jsonl "
                                    f"(it has: {', '.join(present) or 'no .jsonl files'})")
        return read_jsonl(file)

    if path is not None and not Path(path).exists():
        raise FileNotFoundError(f"dataset path {path} does not exist")
    if path is not None and Path(path).is_file():
        rows = read_jsonl(path)
        keep = [(r, w) for r, w in rows
                if (hash_unit(str(field_of(r, question_field, w)), "file-split") < test_fraction) == (split == "test")]
        return keep, 0
    rows = load(split)
    if split == "test":
        return rows, 0
    test_questions = {str(field_of(r, question_field, w)).strip() for r, w in load("test")}
    kept = [(r, w) for r, w in rows if str(field_of(r, question_field, w)).strip() not in test_questions]
    return kept, len(rows) - len(kept)


class DatasetTask(Task):
    """A task over rows with a question field and an answer field; see the module docstring."""

    def __init__(
        self,
        *,
        path: str | None = None,
        hub_id: str | None = None,
        hub_config: str | None = None,
        hub_splits: dict[str, str] | None = None,
        question_field: str = "question",
        answer_field: str = "answer",
        id_field: str | None = None,
        reward: str = "math",
        instruction: str = "",
        test_fraction: float = 0.1,
        **common: Any,
    ):
        """instruction: text appended to each question (after a blank line)."""
        super().__init__(**common)
        if (path is None) == (hub_id is None):
            raise ValueError(f"the {self.name!r} task needs exactly one of path=... or hub_id=...")
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}")
        self.reward_fn: Callable[[str, Any], float] = REWARDS[reward]
        if self.answer_in_tags and reward in TAG_CONTENT_REWARDS:
            self.reward_fn = TAG_CONTENT_REWARDS[reward]
        self.reward_name = reward
        self.path, self.hub_id, self.hub_config = path, hub_id, hub_config
        self.hub_splits = {"train": "train", "test": "test", **(hub_splits or {})}
        self.question_field, self.answer_field, self.id_field = question_field, answer_field, id_field
        self.instruction, self.test_fraction = instruction, test_fraction
        self.dropped_overlap = 0

    def gold(self, value: Any, where: str) -> Any:
        """The gold answer of a row's answer field (subclasses normalise it)."""
        return value

    def _build(self, split: str) -> list[Example]:
        rows, dropped = source_rows(
            split, path=self.path, hub_id=self.hub_id, hub_config=self.hub_config, hub_splits=self.hub_splits,
            question_field=self.question_field, test_fraction=self.test_fraction,
        )
        if split == "train":
            self.dropped_overlap = dropped
        out = []
        for i, (row, where) in enumerate(rows):
            question = str(field_of(row, self.question_field, where))
            if self.instruction:
                question = f"{question}\n\n{self.instruction}"
            answer = self.gold(field_of(row, self.answer_field, where), where)
            ex_id = str(field_of(row, self.id_field, where)) if self.id_field else f"{self.name}:{split}:{i}"
            out.append(Example(id=ex_id, question=question, answer=answer, meta={"source": where, "row": row}))
        return out

    def answer_reward(self, response: str, answer: Any) -> float:
        return self.reward_fn(response, answer)

    def canonical_answer(self, text: str) -> Hashable | None:
        keys = TAG_CONTENT_KEYS if self.answer_in_tags and self.reward_name in TAG_CONTENT_KEYS else ANSWER_KEYS
        key_fn = keys.get(self.reward_name)
        return key_fn(text) if key_fn is not None else super().canonical_answer(text)


# -- answer keys for majority voting ------------------------------------------------------------------

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_MATH_SPAN = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_TEXT_COMMAND = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox)\{([^{}]*)\}")
_FRAC = re.compile(r"(-?)\\frac\{(-?\d+)\}\{(\d+)\}")
_PLAIN_NUMBER = re.compile(r"-?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+|\d+/\d+)")
# Spacing, sizing and decoration that never change a math answer's value.
_MATH_NOISE = ("\\left", "\\right", "\\displaystyle", "\\!", "\\,", "\\;", "\\:", "\\$", "$",
               "^{\\circ}", "^\\circ", "\\%", "%")


def last_boxed(text: str) -> str | None:
    """The content of the last complete \\boxed{...} (or \\fbox{...}) in `text`, nested braces allowed.

    >>> last_boxed(r"so \\boxed{1} no, \\boxed{\\frac{1}{2}}")
    '\\\\frac{1}{2}'
    """
    for match in reversed(list(_BOXED.finditer(text))):
        depth = 1
        for i in range(match.end(), len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[match.end() : i]
    return None


def normalize_math_answer(text: str) -> str | None:
    """A canonical string for a math answer, without math-verify (for majority voting only).

    The answer is the last \\boxed{} in `text`, else its last $...$ / \\(...\\) / \\[...\\] span,
    else its last number. Then: \\text{...} unwrapped, spacing and sizing commands, $, degrees
    and percent signs dropped, \\dfrac / \\tfrac read as \\frac, all whitespace and a final "."
    removed, a short left-hand side dropped ("x=5" -> "5"); a plain number or an integer \\frac
    becomes `canonical_number` ("0.50" and "\\frac{1}{2}" -> "1/2"). Anything else stays a
    string, so "\\sqrt{2}/2" and "\\frac{\\sqrt2}{2}" vote apart (only math-verify knows they agree).

    >>> [normalize_math_answer(s) for s in (r"\\boxed{\\dfrac{1}{2}}", "$0.5$", r"\\boxed{x = 0.50}", "none")]
    ['1/2', '1/2', '1/2', None]
    >>> normalize_math_answer(r"The set is \\boxed{\\{1, 2\\}}")
    '\\\\{1,2\\\\}'
    """
    answer = last_boxed(text)
    if answer is None:
        spans = _MATH_SPAN.findall(text)
        answer = next((g for g in spans[-1] if g), None) if spans else last_number(text)
    if answer is None:
        return None
    s = _TEXT_COMMAND.sub(r"\1", answer)
    for noise in _MATH_NOISE:
        s = s.replace(noise, "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = "".join(s.split()).rstrip(".")
    if s.count("=") == 1 and len(s.split("=")[0]) <= 2:
        s = s.split("=")[1]
    frac = _FRAC.fullmatch(s)
    if frac:
        s = f"{frac.group(1)}{frac.group(2)}/{frac.group(3)}"
    if _PLAIN_NUMBER.fullmatch(s):
        return canonical_number(s)
    return s or None


ANSWER_KEYS: dict[str, Callable[[str], Hashable | None]] = {
    "gsm8k": lambda text: canonical_number(response_number(text)),
    "last_number": lambda text: canonical_number(last_number(text)),
    "math": normalize_math_answer,
    "exact": lambda text: text.strip() or None,
    "countdown": countdown_answer_key,
    "knights_knaves": knights_knaves_answer_key,
    "symbol": symbol_answer_key,
    "choice": lambda text: parse_choice(text, 26),
    "code": lambda text: None,  # programs do not vote
    "math_dapo": dapo_answer_key,
    "math_dapo_strict_box": dapo_boxed_key,
}
"""Reward name -> the answer key a dataset task with that reward votes on (see the module docstring)."""

TAG_CONTENT_REWARDS: dict[str, Callable[[str, Any], float]] = {
    "knights_knaves": lambda text, answer: knights_knaves_reward(text, answer, whole_text=True),
}
"""Rewards whose rule for an untagged text reads only part of it: what grades the content of the
answer tag instead under `answer_in_tags` (all of it)."""

TAG_CONTENT_KEYS: dict[str, Callable[[str], Hashable | None]] = {
    "knights_knaves": lambda text: knights_knaves_answer_key(text, whole_text=True),
}
"""The answer keys that go with `TAG_CONTENT_REWARDS`."""


@TASKS.register("jsonl")
class JsonlTask(DatasetTask):
    name = "jsonl"

    def __init__(self, *, path: str, **options: Any):
        super().__init__(path=path, **options)


@TASKS.register("hf")
class HubTask(DatasetTask):
    name = "hf"

    def __init__(self, *, hub_id: str, **options: Any):
        super().__init__(hub_id=hub_id, **options)
