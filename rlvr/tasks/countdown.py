"""Countdown: reach a target from given numbers with + - * / (TinyZero, Pan et al., 2025).

Generator (ours, seeded): draw `n_numbers` integers in [min_number, max_number], then combine them
all in a random order with random operators, keeping every intermediate value a positive integer
(division only when exact, by a divisor > 1); the result is the target if it lies in
[1, max_target], else draw again. So every puzzle has a solution that uses every number once
(kept in `meta["solution"]`). TinyZero trains on a pre-made set (Countdown-Tasks-3to4: 3 or 4
numbers in 1..99); `n_numbers=4, max_number=99` gives puzzles of the same kind.

Splits: a puzzle's key is its sorted numbers and target; its hash puts it in train or test
(test_fraction), and each split draws with its own seed and keeps only its own, distinct puzzles.
Grading: rlvr.rewards.countdown (each number at most once, or exactly once with use_all=True; an
answer "expression = value" needs the right value; its docstring lists the differences from
TinyZero's scorer).
"""

from __future__ import annotations

import random
from typing import Any

from rlvr.rewards.arithmetic import UnsafeExpression, constants, evaluate_arithmetic, normalize_expression, parse_arithmetic
from rlvr.rewards.countdown import countdown_reward, extract_countdown_answer
from rlvr.rewards.gsm8k import parse_number
from rlvr.tasks.base import TASKS, Example, Task, hash_unit

_INSTRUCTION = (
    "Using the numbers {numbers}, write an arithmetic expression that equals {target}. You may use "
    "+, -, * and / and parentheses, and each number at most once{all}. Show your reasoning, then give "
    "only the expression inside <answer> </answer> tags, for example <answer>(1 + 2) * 3</answer>."
)


def make_puzzle(rng: random.Random, n_numbers: int, min_number: int, max_number: int, max_target: int):
    """(numbers, target, solution expression) with a guaranteed solution; see the module docstring."""
    for _ in range(10_000):
        numbers = [rng.randint(min_number, max_number) for _ in range(n_numbers)]
        items = [(n, str(n)) for n in numbers]
        while len(items) > 1:
            (a, ea), (b, eb) = items.pop(rng.randrange(len(items))), items.pop(rng.randrange(len(items)))
            choices = [("+", a + b), ("*", a * b)]
            if a > b:
                choices.append(("-", a - b))
            if b > 1 and a % b == 0:
                choices.append(("/", a // b))
            op, value = rng.choice(choices)
            items.append((value, f"({ea} {op} {eb})"))
        target, expr = items[0]
        if 1 <= target <= max_target:
            return numbers, target, expr[1:-1] if n_numbers > 1 else expr
    raise ValueError(f"no target in [1, {max_target}] after 10,000 draws; raise max_target or lower the numbers")


@TASKS.register("countdown")
class CountdownTask(Task):
    name = "countdown"
    max_new_tokens = 256

    def __init__(
        self,
        *,
        n_numbers: int = 4,
        min_number: int = 1,
        max_number: int = 99,
        max_target: int = 1000,
        use_all: bool = False,
        train_size: int = 10_000,
        test_size: int = 200,
        test_fraction: float = 0.2,
        seed: int = 0,
        **common: Any,
    ):
        super().__init__(**common)
        if n_numbers < 2 or not 1 <= min_number <= max_number or max_target < 1:
            raise ValueError(
                f"need n_numbers >= 2, 1 <= min_number <= max_number and max_target >= 1; got "
                f"n_numbers={n_numbers}, min_number={min_number}, max_number={max_number}, max_target={max_target}"
            )
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}")
        self.n_numbers, self.min_number, self.max_number = n_numbers, min_number, max_number
        self.max_target, self.use_all = max_target, use_all
        self.sizes = {"train": train_size, "test": test_size}
        self.test_fraction, self.seed = test_fraction, seed

    def _build(self, split: str) -> list[Example]:
        rng = random.Random(f"countdown/{self.seed}/{split}")
        want, out, seen = self.sizes[split], [], set()
        for _ in range(50 * want + 1000):
            numbers, target, solution = make_puzzle(rng, self.n_numbers, self.min_number, self.max_number, self.max_target)
            key = f"{sorted(numbers)}->{target}"
            if key in seen or (hash_unit(key, "countdown") < self.test_fraction) != (split == "test"):
                continue
            seen.add(key)
            question = _INSTRUCTION.format(numbers=numbers, target=target, all=" and all of them" if self.use_all else "")
            answer = {"numbers": numbers, "target": target}
            out.append(Example(id=f"countdown:{key}", question=question, answer=answer, meta={"solution": solution}))
            if len(out) == want:
                return out
        raise ValueError(
            f"could draw only {len(out)} distinct {split} puzzles of the {want} asked for; "
            "widen the number range or ask for fewer"
        )

    def answer_reward(self, response: str, answer: Any) -> float:
        return countdown_reward(response, answer["numbers"], answer["target"], use_all=self.use_all)

    def canonical_answer(self, text: str) -> tuple[str, tuple[int, ...]] | None:
        return countdown_answer_key(text)


def countdown_answer_key(text: str) -> tuple[str, tuple[int, ...]] | None:
    """(value, sorted numbers used) of the expression the grader reads; None if it does not parse.

    The grader's verdict depends on exactly these two things (the value must be the target, the
    numbers must be available), so equivalent solutions vote together ("(6 + 4) * 3" and
    "3 * (4 + 6)" -> ("30", (3, 4, 6))) and no right answer shares a key with a wrong one.
    The value is `str(Fraction)`, e.g. "5/2". An answer "expression = value" whose value is not the
    expression's (which the grader refuses) has no key.

    >>> countdown_answer_key("<answer>3 * (4 + 6)</answer>")
    ('30', (3, 4, 6))
    >>> countdown_answer_key("6 + 4 * 3 = 18") == countdown_answer_key("4*3+6")
    True
    >>> countdown_answer_key("6 + 4 * 3 = 19") is None
    True
    """
    found = extract_countdown_answer(text)
    if found is None:
        return None
    expression, stated = found
    try:
        normalized = normalize_expression(expression)
        used = constants(parse_arithmetic(normalized))
        value = evaluate_arithmetic(normalized)
    except UnsafeExpression:
        return None
    if stated is not None and parse_number(stated) != value:
        return None
    return str(value), tuple(sorted(used))
