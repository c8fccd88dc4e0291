"""The DeepSeek-R1 response format: `<think> reasoning </think> <answer> answer </answer>`.

DeepSeek-R1 (Guo et al., 2025, sec. 2.2.1-2.2.2) trains R1-Zero with a template that asks for the
reasoning inside `<think></think>` and the answer inside `<answer></answer>`, plus a format reward
for following it. The exact rule is not published; ours is:

    ^\\s*<think>(.*?)</think>\\s*<answer>(.*?)</answer>\\s*$        (re.DOTALL)

and each of the four tags occurs exactly once (so a response cannot hide a second answer inside the
thinking, a hack Logic-RL, Xie et al. 2025 sec. 3.2, guards against the same way).

Pre-filled `<think>`: some templates end the prompt with "<think>" (TinyZero's does), so the
response starts inside the thinking. Pass `think_prefilled=True` for those; the response must then
not contain `<think>` and the pattern is `^(.*?)</think>\\s*<answer>(.*?)</answer>\\s*$`.
rlvr's own `r1_zero` template (rlvr.tasks.templates) does NOT pre-fill `<think>`.
"""

from __future__ import annotations

import re

from rlvr.rewards.base import REWARDS

FORMAT_PATTERN = re.compile(r"^\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*$", re.DOTALL)
FORMAT_PATTERN_THINK_PREFILLED = re.compile(r"^(.*?)</think>\s*<answer>(.*?)</answer>\s*$", re.DOTALL)
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def format_reward(response: str, *, think_prefilled: bool = False) -> float:
    """1.0 if `response` follows the R1 format exactly (see the module docstring), else 0.0.

    >>> format_reward("<think>3 + 5 = 8</think>\\n<answer>8</answer>")
    1.0
    >>> format_reward("<think>a</think><answer>8</answer><answer>9</answer>")
    0.0
    >>> format_reward("<answer>8</answer>")
    0.0
    >>> format_reward("3 + 5 = 8</think> <answer>8</answer>", think_prefilled=True)
    1.0
    """
    expected = {"<think>": 0 if think_prefilled else 1, "</think>": 1, "<answer>": 1, "</answer>": 1}
    if any(response.count(tag) != n for tag, n in expected.items()):
        return 0.0
    pattern = FORMAT_PATTERN_THINK_PREFILLED if think_prefilled else FORMAT_PATTERN
    return 1.0 if pattern.match(response) else 0.0


def extract_answer_tag(text: str) -> str | None:
    """The stripped content of the last `<answer>...</answer>` in `text`, or None if there is none.

    >>> extract_answer_tag("<think>maybe 7</think> <answer> 8 </answer>")
    '8'
    >>> extract_answer_tag("no tags here") is None
    True
    """
    matches = _ANSWER_TAG.findall(text)
    return matches[-1].strip() if matches else None


@REWARDS.register("format")
def _format(response: str, answer: object = None) -> float:
    return format_reward(response)


@REWARDS.register("format_think_prefilled")
def _format_prefilled(response: str, answer: object = None) -> float:
    return format_reward(response, think_prefilled=True)
