"""Scoring rollouts: the one place where a task's reward meets generated samples, for training and evaluation.

`score_rollouts` decodes every response (special tokens skipped), calls `task.score(text, example)` on it and
returns the batch with `texts`, `rewards`, `correct` and `reward_components` filled (rlvr.rollout.RolloutBatch).
A reward that raises, times out or returns a non-finite number is either contained (training: the sample
gets reward 0 and is counted by `RewardErrors`, the run goes on) or raised with the problem named
(evaluation, where a broken reward must not pass for a wrong answer).
"""

from __future__ import annotations

import dataclasses
import math
import traceback
from collections.abc import Callable
from typing import Any

from rlvr.rollout.base import RolloutBatch


class RewardErrors:
    """Counts reward calls that failed (`count`: raised or timed out; `timeouts`: ran past the limit); the
    first failure of each kind is logged once."""

    def __init__(self, log=print):
        self.count = 0
        self.timeouts = 0
        self.logged: set[str] = set()
        self.log = log

    def record(self, exc: BaseException) -> None:
        from rlvr.rewards.user import RewardTimeout

        self.count += 1
        kind = "timeout" if isinstance(exc, RewardTimeout) else "error"
        self.timeouts += kind == "timeout"
        if kind in self.logged:
            return
        self.logged.add(kind)
        if kind == "timeout":
            self.log(f"{exc} (logged once, counted in reward_timeouts and reward_errors)")
        else:
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            self.log(f"a reward function raised; that sample gets reward 0 (logged once, counted in reward_errors):\n{tb}")

    def state_dict(self) -> dict[str, int]:
        return {"reward_errors": self.count, "reward_timeouts": self.timeouts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = state["reward_errors"]
        self.timeouts = state.get("reward_timeouts", 0)


def _raise_naming_the_problem(n: int) -> Callable[[BaseException, int, Any], None]:
    def fail(exc: BaseException, row: int, example: Any) -> None:
        raise RuntimeError(
            f"scoring problem {getattr(example, 'id', None)!r} (sample {row % n}) failed: {type(exc).__name__}: {exc}"
        ) from exc

    return fail


def score_rollouts(batch: RolloutBatch, examples: list[Any], task, tokenizer, *,
                   on_error: Callable[[BaseException, int, Any], None] | None = None) -> RolloutBatch:
    """`batch` scored: `examples[batch.prompt_index[i]]` is the problem sample i answers.

    on_error(exc, row, example): called when sample `row`'s reward raises or is not finite; the sample then
    gets reward 0 and is not correct. None: a RuntimeError naming the problem and the sample is raised.
    """
    n = max(1, len(batch) // max(1, len(examples)))
    fail = on_error or _raise_naming_the_problem(n)
    texts = tokenizer.batch_decode(batch.response_ids, skip_special_tokens=True)
    rewards, correct, components = [], [], {}
    for i, text in enumerate(texts):
        example = examples[batch.prompt_index[i]]
        try:
            result = task.score(text, example)
            reward, ok, comps = float(result.reward), bool(result.correct), dict(result.components or {})
            if not math.isfinite(reward):
                raise ValueError(f"reward function returned a non-finite reward {reward!r}")
        except Exception as exc:  # contained by on_error: one bad sample must not end a run
            fail(exc, i, example)
            reward, ok, comps = 0.0, False, {}
        rewards.append(reward)
        correct.append(ok)
        for name, value in comps.items():
            components.setdefault(name, [0.0] * len(texts))[i] = float(value)
    return dataclasses.replace(batch, examples=list(examples), texts=texts, rewards=rewards, correct=correct,
                               reward_components=components)
