"""Arithmetic: "What is 3 + 5? Answer with just the number." (the default trainer recipe).

Problems are `n_terms` integers of up to `digits` digits (0 .. 10^digits - 1) joined by operators
drawn from `operators` ("+", "-", "*"), with the usual precedence; the answer is exact.

Splits: when the whole problem space is small enough to list (at most 200,000 problems), it is
listed and cut by hash into exactly round(test_fraction * S) test problems and the rest for
training. Single-digit addition has only S = 100 problems: 20 held out, 80 for training. The
default test split of 200 examples therefore repeats the 20 held-out problems 10 times each (round
robin, see rlvr.tasks.base): sampled at temperature > 0, that is 10 samples per held-out problem.
Larger spaces are sampled with the seed, each draw kept only in the split its hash assigns it to.

Grading (`answer_from`): "last_number" (default) takes the last number in the response, so "8",
"3 + 5 = 8" and "The answer is 8." are right and "8, or maybe 9" is wrong; "exact" needs the
stripped response to be the number alone; "math_dapo" is DAPO's reward (rlvr.rewards.math_dapo:
+1 when the value after the last "Answer:" is the number, else -1; ask for that line in
`instruction`).

Measured starting point: SmolLM2-135M-Instruct (embedded), chat template with its default system
message, sampling at temperature 1.0 with at most 24 new tokens, gets 21.5% (43 of the 200 default
test examples) right; it often answers in a sentence ("9 + 9 = 18"), which "last_number" accepts.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

from rlvr.rewards.arithmetic import evaluate_arithmetic
from rlvr.rewards.gsm8k import last_number, last_number_reward
from rlvr.rewards.math_dapo import extract_dapo_answer, math_dapo_reward
from rlvr.tasks.base import TASKS, Example, Task, canonical_number, hash_unit, repeat_to_size, split_by_hash

_ENUMERATE_LIMIT = 200_000
_DEFAULT_SAMPLED_TRAIN = 10_000
ANSWER_FROM = ("last_number", "exact", "math_dapo")


@TASKS.register("arithmetic")
class ArithmeticTask(Task):
    name = "arithmetic"
    max_new_tokens = 64

    def __init__(
        self,
        *,
        digits: int = 1,
        n_terms: int = 2,
        operators: str = "+",
        instruction: str = "Answer with just the number.",
        answer_from: str = "last_number",
        train_size: int | None = None,
        test_size: int | None = 200,
        test_fraction: float = 0.2,
        seed: int = 0,
        **common: Any,
    ):
        """train_size None: every training problem if the space is listed, else 10,000 sampled.
        test_size None: every held-out problem once."""
        super().__init__(**common)
        if digits < 1 or n_terms < 2:
            raise ValueError(f"need digits >= 1 and n_terms >= 2; got digits={digits}, n_terms={n_terms}")
        if not operators or set(operators) - set("+-*"):
            raise ValueError(f"operators must be a non-empty string of '+', '-', '*'; got {operators!r}")
        if answer_from not in ANSWER_FROM:
            raise ValueError(f"unknown answer_from {answer_from!r}; known: {', '.join(ANSWER_FROM)}")
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}")
        self.digits, self.n_terms, self.operators = digits, n_terms, "".join(sorted(set(operators)))
        self.instruction, self.answer_from = instruction, answer_from
        self.sizes = {"train": train_size, "test": test_size}
        self.test_fraction, self.seed = test_fraction, seed
        self._salt = f"arithmetic/{digits}/{n_terms}/{self.operators}"

    @property
    def space_size(self) -> int:
        return (10**self.digits) ** self.n_terms * len(self.operators) ** (self.n_terms - 1)

    def _text(self, operands: tuple[int, ...], ops: tuple[str, ...]) -> str:
        parts = [str(operands[0])]
        for op, x in zip(ops, operands[1:]):
            parts += [op, str(x)]
        return " ".join(parts)

    def _example(self, problem: str) -> Example:
        # Our own problem text: lift the evaluator's limits, which are sized for model output.
        n = self.n_terms
        value = evaluate_arithmetic(problem, max_chars=len(problem), max_depth=n + 1, max_abs=10 ** (self.digits * n + 1))
        question = f"What is {problem}?" + (f" {self.instruction}" if self.instruction else "")
        return Example(id=f"arithmetic:{problem}", question=question, answer=int(value), meta={"problem": problem})

    def _build(self, split: str) -> list[Example]:
        rng = random.Random(f"{self.seed}/{split}")
        if self.space_size <= _ENUMERATE_LIMIT:
            values = range(10**self.digits)
            problems = [
                self._text(xs, ops)
                for xs in itertools.product(values, repeat=self.n_terms)
                for ops in itertools.product(self.operators, repeat=self.n_terms - 1)
            ]
            pool = sorted(split_by_hash(problems, self.test_fraction, self._salt)[split])
            rng.shuffle(pool)
        else:
            want = self.sizes[split] or _DEFAULT_SAMPLED_TRAIN
            pool, seen = [], set()
            for _ in range(50 * want + 1000):
                xs = tuple(rng.randrange(10**self.digits) for _ in range(self.n_terms))
                ops = tuple(rng.choice(self.operators) for _ in range(self.n_terms - 1))
                text = self._text(xs, ops)
                in_test = hash_unit(text, self._salt) < self.test_fraction
                if text not in seen and in_test == (split == "test"):
                    seen.add(text)
                    pool.append(text)
                    if len(pool) == want:
                        break
        return repeat_to_size([self._example(p) for p in pool], self.sizes[split])

    def answer_reward(self, response: str, answer: Any) -> float:
        if self.answer_from == "exact":
            return 1.0 if response.strip() == str(answer) else 0.0
        if self.answer_from == "math_dapo":
            return math_dapo_reward(response, answer)
        return last_number_reward(response, answer)

    def canonical_answer(self, text: str) -> str | None:
        """"last_number": the last number, canonical ("3 + 5 = 8.0" -> "8"); "exact": the stripped text,
        since that grader tells "8" from "8.0" and the vote must not merge them; "math_dapo": DAPO's
        normalised "Answer:" value, the string its grader compares.

        >>> ArithmeticTask().canonical_answer("So 9 + 9 = $18.00")
        '18'
        >>> ArithmeticTask(answer_from="math_dapo").canonical_answer("9 + 9 = 18\\nAnswer: 18")
        '18'
        """
        if self.answer_from == "exact":
            return text.strip() or None
        if self.answer_from == "math_dapo":
            return extract_dapo_answer(text)
        return canonical_number(last_number(text))
