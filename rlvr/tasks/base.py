"""A task is a dataset, its prompts and its reward, kept together so that grading cannot drift.

As in nanochat, the task that makes a problem also scores the answer: `Task.score` is both the
training reward and the evaluation grader (`RewardResult.correct` is what pass@k counts).

Held-out problems are never trained on. Generated tasks put each problem in a split by a hash of
its canonical text (`hash_unit`), independent of the seed, so two runs with different seeds still
share one test set and no seed can move a problem across splits; each split then de-duplicates.
Where a split has fewer distinct problems than asked for, they are repeated round-robin (ids get
a "#rK" suffix; `meta["problem_id"]` keeps the problem's own id), so an evaluation of 200 samples
over 20 held-out problems weighs every problem equally (10 samples each).
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from rlvr.config.budgets import (  # noqa: F401 (GYM_EPISODE_STEPS, response_budget: their former home)
    DEFAULT_RESPONSE_BUDGET,
    GYM_EPISODE_STEPS,
    RESPONSE_BUDGETS,
    response_budget,
)
from rlvr.core.registry import Registry
from rlvr.rewards.base import CompositeReward, Reported, RewardResult
from rlvr.rewards.format import extract_answer_tag, format_reward
from rlvr.rewards.gsm8k import parse_number
from rlvr.tasks.templates import check_template, render_prompt

SPLITS = ("train", "test")


class TaskRegistry(Registry):
    """Task classes by name; registering one also records its response budget (`Task.max_new_tokens`) where
    the config finds it (rlvr.config.budgets), so that rollout.max_new_tokens defaults to it."""

    def register(self, name: str, **declared):
        add = super().register(name, **declared)

        def decorator(cls):
            cls = add(cls)
            RESPONSE_BUDGETS[name] = cls.max_new_tokens
            return cls

        return decorator


TASKS: Registry = TaskRegistry("task")
"""Task classes by name; build one with `get_task(name, **options)`."""


@dataclass(frozen=True)
class Example:
    """One problem: a stable `id`, the `question` text, the gold `answer` the reward needs, and `meta`."""

    id: str
    question: str
    answer: Any
    meta: dict = field(default_factory=dict)


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: train, test")
    return split


def hash_unit(key: str, salt: str = "") -> float:
    """A deterministic number in [0, 1) for `key` (SHA-256), the same on every machine and run."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_by_hash(keys: Sequence[str], test_fraction: float, salt: str) -> dict[str, list[str]]:
    """Distinct `keys` into train/test with exactly round(test_fraction * n) test keys (at least one
    of each when n >= 2 and 0 < test_fraction < 1): the keys with the smallest `hash_unit`."""
    unique = sorted(set(keys), key=lambda k: (hash_unit(k, salt), k))
    n_test = round(test_fraction * len(unique))
    if len(unique) >= 2 and 0 < test_fraction < 1:
        n_test = min(max(n_test, 1), len(unique) - 1)
    return {"test": unique[:n_test], "train": unique[n_test:]}


def repeat_to_size(pool: Sequence[Example], size: int | None) -> list[Example]:
    """`size` examples from `pool`: its first `size`, or the pool repeated round-robin if smaller."""
    if size is None or size <= len(pool):
        return list(pool if size is None else pool[:size])
    if not pool:
        raise ValueError(f"cannot make {size} examples: this split has no problems")
    out = list(pool)
    for i in range(len(pool), size):
        ex = pool[i % len(pool)]
        meta = {**ex.meta, "problem_id": ex.id}
        out.append(replace(ex, id=f"{ex.id}#r{i // len(pool)}", meta=meta))
    return out


class Task:
    """Base class. Subclasses set `name` and `default_template`, and implement `_build(split)` and
    `answer_reward(response, answer)`; `question` text becomes the user message.

    Options shared by every task:
      template: "chat" | "r1_zero" | "plain" (see rlvr.tasks.templates); default per task.
      system_prompt: an optional system message.
      answer_in_tags: grade only the content of the last <answer>...</answer> (no tag: 0).
        Default: on for the r1_zero template, off otherwise.
      format_weight: weight of the R1 format reward (rlvr.rewards.format) added to the answer
        reward; the format component is reported whenever answer_in_tags is on.
    """

    name: str = ""
    default_template: str = "chat"
    max_new_tokens: int = DEFAULT_RESPONSE_BUDGET
    """The response budget this task's problems need: the default max_new_tokens of every command (train's
    rollout, eval, sft's and expert-iter's held-out accuracy) wherever none is set (`response_budget`)."""
    report_components: bool = False
    """Log the components of `answer_reward`'s RewardResult too (as answer/NAME), e.g. a code task's
    pass_fraction and sandbox outcomes."""

    def __init__(
        self,
        *,
        template: str | None = None,
        system_prompt: str | None = None,
        answer_in_tags: bool | None = None,
        format_weight: float = 0.0,
    ):
        self.template = check_template(template or self.default_template)
        self.system_prompt = system_prompt
        self.answer_in_tags = self.template == "r1_zero" if answer_in_tags is None else bool(answer_in_tags)
        self.format_weight = float(format_weight)
        graded = Reported(self._graded_answer) if self.report_components else self._graded_answer
        components: dict = {"answer": (graded, 1.0)}
        if self.answer_in_tags or self.format_weight:
            components["format"] = (format_reward, self.format_weight)
        self.reward = CompositeReward(components, correct_from="answer")
        self._cache: dict[str, list[Example]] = {}

    # -- data -------------------------------------------------------------------------------------
    def examples(self, split: str, limit: int | None = None) -> list[Example]:
        """The problems of `split` ("train" or "test"), in a fixed order; the first `limit` of them."""
        check_split(split)
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0 or None; got {limit}")
        if split not in self._cache:
            self._cache[split] = self._build(split)
        data = self._cache[split]
        return list(data if limit is None else data[:limit])

    def _build(self, split: str) -> list[Example]:
        raise NotImplementedError

    # -- prompts ----------------------------------------------------------------------------------
    def messages(self, example: Example) -> list[dict[str, str]]:
        """Chat messages for `example`: the system prompt (if set), then the question as the user."""
        out = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return out + [{"role": "user", "content": example.question}]

    def prompt(self, example: Example, tokenizer: Any = None) -> str:
        """The rendered prompt text under this task's template."""
        return render_prompt(tokenizer, self.messages(example), self.template)

    # -- reward -----------------------------------------------------------------------------------
    def answer_reward(self, response: str, answer: Any) -> float | RewardResult:
        raise NotImplementedError

    def _graded_answer(self, response: str, answer: Any) -> float | RewardResult:
        if self.answer_in_tags:
            response = extract_answer_tag(response)
            if response is None:
                return 0.0
        return self.answer_reward(response, answer)

    def score(self, response: str, example: Example) -> RewardResult:
        """Reward, correctness and components of one response to `example`."""
        return self.reward(response, example.answer, self.fields(example))

    def fields(self, example: Example) -> dict[str, Any]:
        """The problem's data that a user's reward may take by name: a dataset row's fields (or a generated
        problem's `meta`), and `question` (the question text, unless the row has its own)."""
        data = example.meta.get("row", example.meta)
        return {"question": example.question, **{str(k): v for k, v in data.items()}}

    def use_rewards(self, components: dict[str, tuple[Any, float]]) -> None:
        """Replace the task's reward with weighted `components` (name -> (fn, weight)); the first one decides
        `correct`. Each fn is a registered reward `fn(response, answer)` or a user's reward taking fields."""
        self.reward = CompositeReward(components, correct_from=next(iter(components)))

    # -- majority voting --------------------------------------------------------------------------
    def extract_answer(self, response: str) -> Hashable | None:
        """The response's final answer in a canonical form, for majority voting (maj@n), or None.

        Two responses that give the same answer the same way get equal keys ("18", "18.0" and "$18"
        for a numeric task), so they vote together. It reads the same part of the response the
        grader reads: the last <answer> tag when `answer_in_tags` is on (no tag: None), then the
        task's `canonical_answer`. It never needs the gold answer.
        """
        if self.answer_in_tags:
            response = extract_answer_tag(response)
            if response is None:
                return None
        return self.canonical_answer(response)

    def canonical_answer(self, text: str) -> Hashable | None:
        """The canonical answer key of `text` (already cut to the answer tag when tags are used).

        Default: the text with runs of whitespace collapsed; None when it is empty. Tasks override it.
        """
        return " ".join(text.split()) or None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, template={self.template!r})"


def canonical_number(text: str | None) -> str | None:
    """A number written any way ("18", "18.0", "$18", "1,018", "0.50") as one canonical string, or None.

    The canonical form is `str(Fraction)`: "18", "-3", "1/2", so equal rationals give equal strings.

    >>> [canonical_number(s) for s in ("18", "18.00", "$18", "1,018", "0.5", "x")]
    ['18', '18', '18', '1018', '1/2', None]
    """
    value = parse_number(text)
    return None if value is None else str(value)


def task_options(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword options a task class accepts: its own and those of every base up to Task."""
    options: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if klass is object or "__init__" not in vars(klass):
            continue
        for p in inspect.signature(klass.__init__).parameters.values():
            if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                options.setdefault(p.name, p)
    return options


def get_task(name: str, **options: Any) -> Task:
    """Build the task registered as `name` with `options`, rejecting unknown or missing options.

    >>> get_task("arithmetic", digit=2)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: task 'arithmetic' has no option 'digit' (did you mean 'digits'?); options: digits, n_terms, ...
    """
    cls = TASKS[name]
    known = task_options(cls)
    for key in options:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"task {name!r} has no option {key!r}{hint}; options: {', '.join(known)}")
    missing = [k for k, p in known.items() if p.default is p.empty and k not in options]
    if missing:
        raise ValueError(f"task {name!r} needs option(s) {', '.join(missing)}")
    return cls(**options)
