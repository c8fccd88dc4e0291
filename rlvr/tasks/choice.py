"""Multiple-choice questions (MMLU-style and GPQA-style rows), graded by the letter of the answer.

Rows come from JSONL files or a hub dataset (rlvr.tasks.dataset), in either layout:
- MMLU-style: `choices_field` holds the options as a list ["Paris", "Rome", ...] (or a dict
  {"A": ..., "B": ...}), and `answer_field` the correct one as a letter ("C"), an index (2), or the
  option's text;
- GPQA-style: `correct_field` holds the right option and `incorrect_fields` the others; they are
  shuffled into A, B, C, D by a hash of the question (the same order on every machine and run, so
  the right letter is not always A).
The prompt lists the options as "A. ...", one per line, then the instruction. Graded by
rlvr.rewards.choice: the letter the response commits to ("The answer is (C)") equals the gold one.
Majority voting votes on that letter.
"""

from __future__ import annotations

import random
from collections.abc import Hashable
from typing import Any

from rlvr.rewards.choice import LETTERS, choice_reward, parse_choice
from rlvr.tasks.base import TASKS, Example, hash_unit
from rlvr.tasks.dataset import DatasetTask, field_of

INSTRUCTION = 'Think it through, then end with "The answer is (X)", where X is the letter of the correct option.'


@TASKS.register("multiple_choice")
class MultipleChoiceTask(DatasetTask):
    name = "multiple_choice"

    def __init__(self, *, choices_field: str | None = "choices", correct_field: str | None = None,
                 incorrect_fields: list[str] | None = None, instruction: str = INSTRUCTION, **options: Any):
        """choices_field: the options (MMLU layout); correct_field + incorrect_fields: the GPQA layout."""
        gpqa = correct_field is not None
        if gpqa and not incorrect_fields:
            raise ValueError("correct_field needs incorrect_fields (the wrong options' field names), e.g. "
                             "['Incorrect Answer 1', 'Incorrect Answer 2', 'Incorrect Answer 3']")
        if gpqa:
            options.setdefault("answer_field", correct_field)
        super().__init__(instruction="", **{"reward": "choice", **options})
        self.choices_field = None if gpqa else choices_field
        self.correct_field, self.incorrect_fields = correct_field, list(incorrect_fields or [])
        self.choice_instruction = instruction

    def options_of(self, row: dict[str, Any], where: str) -> tuple[list[str], str]:
        """(the options in prompt order, the correct letter) of one row."""
        if self.correct_field is not None:
            right = str(field_of(row, self.correct_field, where)).strip()
            options = [right] + [str(field_of(row, f, where)).strip() for f in self.incorrect_fields]
            question = str(field_of(row, self.question_field, where))
            order = list(range(len(options)))
            random.Random(int(hash_unit(question, "choice-order") * 2**52)).shuffle(order)
            return [options[i] for i in order], LETTERS[order.index(0)]
        raw = field_of(row, self.choices_field, where)
        if isinstance(raw, dict):
            options = [str(raw[k]) for k in sorted(raw)]
        elif isinstance(raw, list):
            options = [str(o) for o in raw]
        else:
            raise ValueError(f"{where}: {self.choices_field!r} must be a list of options or a dict letter -> option; "
                             f"got {type(raw).__name__}")
        if not 2 <= len(options) <= 26:
            raise ValueError(f"{where}: a question needs 2 to 26 options; got {len(options)}")
        return options, self._gold_letter(field_of(row, self.answer_field, where), options, where)

    @staticmethod
    def _gold_letter(value: Any, options: list[str], where: str) -> str:
        if isinstance(value, bool):
            raise ValueError(f"{where}: the answer must be a letter, an index or an option's text; got {value!r}")
        if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
            index = int(value)
            if not 0 <= index < len(options):
                raise ValueError(f"{where}: answer index {index} is out of range for {len(options)} options")
            return LETTERS[index]
        text = str(value).strip()
        if len(text) == 1 and text.upper() in LETTERS[: len(options)]:
            return text.upper()
        parsed = parse_choice(text, len(options)) if len(text) <= 4 else None
        if parsed is not None:
            return parsed
        matches = [i for i, o in enumerate(options) if o.strip() == text]
        if len(matches) == 1:
            return LETTERS[matches[0]]
        raise ValueError(f"{where}: answer {text[:60]!r} is not a letter (A-{LETTERS[len(options) - 1]}), "
                         "an index, or the text of exactly one option")

    def _build(self, split: str) -> list[Example]:
        out = []
        for ex in super()._build(split):
            options, letter = self.options_of(ex.meta["row"], ex.meta["source"])
            listed = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
            question = f"{ex.question}\n\n{listed}\n\n{self.choice_instruction}".rstrip()
            meta = {**ex.meta, "options": options}
            out.append(Example(id=ex.id, question=question, answer=letter, meta=meta))
        return out

    def answer_reward(self, response: str, answer: Any) -> float:
        return choice_reward(response, answer)  # the letters A-D, widened to the gold letter

    def canonical_answer(self, text: str) -> Hashable | None:
        return parse_choice(text, 26)
