"""What every reward returns, how rewards combine, and the registry of named rewards.

A reward is a plain callable, text in and a float out. Rewards with a gold answer take
`(response, answer)`; rewards of the response alone (format) take `(response)`. The registry
`REWARDS` holds every named reward under the uniform signature `fn(response, answer) -> float`
so that a generic dataset task can name its verifier in a config file (`reward: math`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rlvr.core.registry import Registry

REWARDS: Registry = Registry("reward")
"""Named rewards, each `fn(response: str, answer: Any) -> float` (rewards that need no answer ignore it)."""


@dataclass(frozen=True)
class RewardResult:
    """The score of one response.

    reward: the scalar used for training (a weighted sum of the components).
    correct: whether the answer is right; this is what pass@k counts, independent of format bonuses.
    components: each component's unweighted value, for logging (`reward/format`, `reward/answer`).
    """

    reward: float
    correct: bool
    components: dict[str, float] = field(default_factory=dict)


def _takes_answer(fn: Callable) -> bool:
    """True when `fn` accepts a second positional argument (the gold answer)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: assume the full protocol
        return True
    positional = [
        p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in positional)


class Reported:
    """A reward component whose `RewardResult.components` are reported too (as "NAME/SUB") by CompositeReward."""

    report_components = True

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)


class CompositeReward:
    """A weighted sum of named reward components, reporting each one.

    reward = sum_i weight_i * value_i, as in DeepSeek-R1 (Guo et al., 2025, sec. 2.2.2: an accuracy
    reward plus a format reward) and Logic-RL (Xie et al., 2025, sec. 3.2: format score + answer
    score). Logic-RL's exact scale (format +1/-1, answer +2/-1.5/-2) is an affine map of 0/1
    components; here each component is a float (usually 0 or 1) and only the weights are chosen.

    Each component is `(fn, weight)`; `fn(response, answer)` or `fn(response)` (detected from its
    signature) returns a float, a bool, or a `RewardResult` (its `.reward` is used).
    `correct` is read from the component named `correct_from` (default: "answer" if present, else
    the only component): a `RewardResult`'s own `correct`, otherwise value >= 1.0 (full credit).

    >>> from rlvr.rewards.format import format_reward
    >>> from rlvr.rewards.gsm8k import gsm8k_reward
    >>> r = CompositeReward({"answer": (gsm8k_reward, 1.0), "format": (format_reward, 0.1)})
    >>> r("<think>2+2</think><answer>4</answer>", "4")
    RewardResult(reward=1.1, correct=True, components={'answer': 1.0, 'format': 1.0})
    >>> r("it is 5", "4")
    RewardResult(reward=0.0, correct=False, components={'answer': 0.0, 'format': 0.0})
    """

    def __init__(
        self,
        components: Mapping[str, tuple[Callable[..., Any], float]],
        *,
        correct_from: str | None = None,
    ):
        if not components:
            raise ValueError("CompositeReward needs at least one component, e.g. {'answer': (fn, 1.0)}")
        self.components: dict[str, tuple[Callable[..., Any], float]] = {}
        self._takes_answer: dict[str, bool] = {}
        for name, spec in components.items():
            if not (isinstance(spec, tuple) and len(spec) == 2 and callable(spec[0])):
                raise ValueError(f"reward component {name!r} must be a (fn, weight) pair; got {spec!r}")
            fn, weight = spec
            self.components[name] = (fn, float(weight))
            self._takes_answer[name] = _takes_answer(fn)
        if correct_from is None:
            correct_from = "answer" if "answer" in self.components else None
            if correct_from is None and len(self.components) == 1:
                correct_from = next(iter(self.components))
        if correct_from is None or correct_from not in self.components:
            raise ValueError(
                f"correct_from={correct_from!r} must name a component; components: "
                f"{', '.join(self.components)} (name one 'answer' or pass correct_from=...)"
            )
        self.correct_from = correct_from

    def __call__(self, response: str, answer: Any = None, fields: Mapping[str, Any] | None = None) -> RewardResult:
        """fields: the problem's other data, passed to components that take it (`takes_fields`, a user's reward)."""
        total = 0.0
        values: dict[str, float] = {}
        correct = False
        for name, (fn, weight) in self.components.items():
            if getattr(fn, "takes_fields", False):
                out = fn(response, answer, fields)
            else:
                out = fn(response, answer) if self._takes_answer[name] else fn(response)
            if isinstance(out, RewardResult):
                value, comp_correct = float(out.reward), out.correct
                if getattr(fn, "report_components", False):  # its own components are logged too, as NAME/SUB
                    values.update({f"{name}/{sub}": float(v) for sub, v in out.components.items()})
            else:
                value = float(out)
                comp_correct = value >= 1.0
            values[name] = value
            total += weight * value
            if name == self.correct_from:
                correct = comp_correct
        return RewardResult(reward=total, correct=correct, components=values)

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}: {getattr(f, '__name__', f)!s} x {w:g}" for n, (f, w) in self.components.items())
        return f"CompositeReward({parts})"
