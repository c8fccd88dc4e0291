"""The DeepSeek-R1 response format: `<think> reasoning </think> <answer> answer </answer>`.

DeepSeek-R1 (Guo et al., 2025, sec. 2.2.1-2.2.2) trains R1-Zero with a template that asks for the
reasoning inside `<think></think>` and the answer inside `<answer></answer>`, plus a format reward
for following it. DeepSeek-R1's exact rule is not published; rlvr's (`format_reward`, the default
of every task) is:

    ^\\s*<think>(.*?)</think>\\s*<answer>(.*?)</answer>\\s*$        (re.DOTALL)

and each of the four tags occurs exactly once (so a response cannot hide a second answer inside the
thinking, a hack Logic-RL, Xie et al. 2025 sec. 3.2, guards against the same way).

Logic-RL's rule is published (`verl/utils/reward_score/kk.py` of github.com/Unakar/Logic-RL) and
is looser: each of the four tags occurs exactly once, and `<think>` comes before `</think>`, which
comes before `<answer>`, which comes before `</answer>`. Nothing else is checked, so text before
`<think>`, between `</think>` and `<answer>`, and after `</answer>` (an end-of-turn token such as
`<|im_end|>`, or more words) is allowed. `logic_rl_format_reward` implements it (registered as
`format_logic_rl`); Logic-RL scores it +1 / -1, this is 1.0 / 0.0 like `format_reward`.

Pre-filled `<think>`: some templates end the prompt with "<think>" (TinyZero's and Logic-RL's do),
so the response starts inside the thinking. Pass `think_prefilled=True` for those; the response must
then not contain `<think>` and the pattern is `^(.*?)</think>\\s*<answer>(.*?)</answer>\\s*$`
(Logic-RL's rule: the other three tags once each, in order, as it checks the pre-filled `<think>`
together with the response).
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


_TAG_ORDER = ("<think>", "</think>", "<answer>", "</answer>")


def logic_rl_format_reward(response: str, *, think_prefilled: bool = False) -> float:
    """1.0 if `response` follows Logic-RL's format rule (see the module docstring), else 0.0.

    >>> logic_rl_format_reward("Let me see. <think>a</think> So: <answer>8</answer><|im_end|>")
    1.0
    >>> logic_rl_format_reward("<think>a</think><answer>8</answer><answer>9</answer>")
    0.0
    >>> logic_rl_format_reward("<answer>8</answer><think>a</think>")
    0.0
    >>> logic_rl_format_reward("a</think><answer>8</answer>", think_prefilled=True)
    1.0
    """
    tags = _TAG_ORDER[1:] if think_prefilled else _TAG_ORDER
    if think_prefilled and "<think>" in response:
        return 0.0
    if any(response.count(tag) != 1 for tag in tags):
        return 0.0
    positions = [response.find(tag) for tag in tags]
    return 1.0 if positions == sorted(positions) else 0.0


FORMAT_RULES = {"r1": format_reward, "logic_rl": logic_rl_format_reward}
"""Format rules by name: rlvr's strict R1 rule (the default) and Logic-RL's published one."""


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


@REWARDS.register("format_logic_rl")
def _format_logic_rl(response: str, answer: object = None) -> float:
    return logic_rl_format_reward(response)


@REWARDS.register("format_logic_rl_think_prefilled")
def _format_logic_rl_prefilled(response: str, answer: object = None) -> float:
    return logic_rl_format_reward(response, think_prefilled=True)
