"""Tasks: a dataset, its prompt rendering and its reward, together.

`get_task(name, **options)` builds a registered task; `Task.examples(split)`, `Task.messages`,
`Task.prompt` and `Task.score` are what the trainer and the evaluator use.
"""

from rlvr.tasks import arithmetic, choice, code, countdown, dataset, gsm8k, knights_knaves, symbol  # noqa: F401 (registers)
from rlvr.tasks.base import SPLITS, TASKS, Example, Task, get_task, task_options
from rlvr.tasks.build import build_task, check_reward_fields, close_rewards
from rlvr.tasks.templates import R1_ZERO_TEMPLATE, TEMPLATES, render_prompt

__all__ = [
    "R1_ZERO_TEMPLATE",
    "SPLITS",
    "TASKS",
    "TEMPLATES",
    "Example",
    "Task",
    "build_task",
    "check_reward_fields",
    "close_rewards",
    "get_task",
    "render_prompt",
    "task_options",
]
