"""The response budget of each task: the default `max_new_tokens` of every command wherever none is set
(train's rollout, eval, sft's and expert-iter's held-out accuracy).

The budget belongs to the task (`Task.max_new_tokens` in rlvr.tasks), but a config resolves before any task
is imported, so the numbers of the bundled tasks are written here; registering a task (rlvr.tasks.base.TASKS)
records its own `max_new_tokens` over them, and a test checks that the two agree for every bundled task.
"""

from __future__ import annotations

DEFAULT_RESPONSE_BUDGET = 256
"""The budget of a task that sets none (`Task.max_new_tokens`), and of a name no task is registered under
(which the preflight reports)."""

GYM_EPISODE_STEPS = 500
"""A gym task's (`gym:ENV_ID`) default episode step limit (rollout.max_new_tokens): CartPole-v1's own."""

RESPONSE_BUDGETS: dict[str, int] = {
    "arithmetic": 64,
    "symbol": 64,
    "countdown": 256,
    "knights_knaves": 512,
    "code": 512,
    "humaneval": 512,
}
"""Task name -> its response budget; a task not named here has DEFAULT_RESPONSE_BUDGET. Registering a task
writes its class's `max_new_tokens` here."""


def response_budget(task_name: str) -> int:
    """The default max_new_tokens for task `task_name`; unknown names get the base default, as the preflight
    reports them.

    >>> response_budget("arithmetic"), response_budget("gsm8k"), response_budget("gym:CartPole-v1")
    (64, 256, 500)
    """
    if task_name.startswith("gym:"):
        return GYM_EPISODE_STEPS
    return RESPONSE_BUDGETS.get(task_name, DEFAULT_RESPONSE_BUDGET)
