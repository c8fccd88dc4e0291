"""Prompt templates: how a task's messages become the text the model continues.

- `chat`: the tokenizer's own chat template, `apply_chat_template(messages, tokenize=False,
  add_generation_prompt=True)`. The rendered text already holds the template's special tokens, so
  tokenize it with `add_special_tokens=False` (or BOS may appear twice).
- `r1_zero`: the plain template of DeepSeek-R1-Zero (Guo et al., 2025, "DeepSeek-R1: Incentivizing
  Reasoning Capability in LLMs via Reinforcement Learning", Table 1), for base models: the model
  writes `<think> ... </think> <answer> ... </answer>` after "Assistant:". It does NOT pre-fill
  `<think>` (score with `format_reward(..., think_prefilled=False)`). A system message, if any, is
  placed between the template's instructions and "User:".
- `plain`: the message contents joined by blank lines, nothing added (for tiny test models and base
  models with prompts that carry their own instructions).

`r1_zero` and `plain` accept one user message, optionally after one system message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

TEMPLATES = ("chat", "r1_zero", "plain")

R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user "
    "with the answer. The reasoning process and answer are enclosed within <think> </think> and "
    "<answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> "
    "<answer> answer here </answer>.{system} User: {prompt} Assistant:"
)


def check_template(template: str) -> str:
    if template not in TEMPLATES:
        import difflib

        close = difflib.get_close_matches(str(template), TEMPLATES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown prompt template {template!r}; known: {', '.join(TEMPLATES)}{hint}")
    return template


def _system_and_user(messages: Sequence[dict[str, Any]], template: str) -> tuple[str | None, str]:
    roles = [m.get("role") for m in messages]
    if roles == ["user"]:
        return None, str(messages[0]["content"])
    if roles == ["system", "user"]:
        return str(messages[0]["content"]), str(messages[1]["content"])
    raise ValueError(
        f"the {template!r} template takes one user message, optionally after one system message; "
        f"got roles {roles} (use template='chat' for conversations)"
    )


def render_prompt(tokenizer: Any, messages: Sequence[dict[str, Any]], template: str = "chat") -> str:
    """The prompt text for `messages` under `template` (see the module docstring).

    `tokenizer` is needed only for `chat` (pass None otherwise).

    >>> render_prompt(None, [{"role": "user", "content": "What is 3 + 5?"}], "plain")
    'What is 3 + 5?'
    >>> render_prompt(None, [{"role": "user", "content": "What is 3 + 5?"}], "r1_zero")[-42:]
    '</answer>. User: What is 3 + 5? Assistant:'
    """
    check_template(template)
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "template='chat' needs a tokenizer with a chat template; this one has none "
                "(use template='plain' or 'r1_zero' for base models)"
            )
        text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        if not isinstance(text, str):
            raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected str")
        return text
    system, user = _system_and_user(messages, template)
    if template == "r1_zero":
        user = user.strip()
        if not user.endswith((".", "?", "!")):
            user += "."  # the paper's "User: prompt. Assistant:", without doubling a final "?"
        return R1_ZERO_TEMPLATE.format(system=f" {system}" if system else "", prompt=user)
    return user if system is None else f"{system}\n\n{user}"
