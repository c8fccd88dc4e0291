"""A task as the config describes it: `task.name`, its options, its template and its reward."""

from __future__ import annotations

from typing import Any

from rlvr.tasks.base import Example, Task, get_task


def build_task(task_cfg: Any) -> Task:
    """The task of a `TaskConfig`, with `task.reward` / `task.rewards` in place of its own reward."""
    from rlvr.config import reward_term_name
    from rlvr.rewards.user import make_reward

    kwargs = dict(task_cfg.kwargs)
    if task_cfg.template is not None:
        kwargs["template"] = task_cfg.template
    task = get_task(task_cfg.name, **kwargs)
    if task_cfg.reward is not None:
        terms = [(reward_term_name(task_cfg.reward), task_cfg.reward, 1.0)]
    else:
        terms = [(t.name or reward_term_name(t.fn), t.fn, t.weight) for t in task_cfg.rewards or []]
    if terms:
        task.use_rewards({name: (make_reward(spec, task_cfg.reward_timeout_s), weight) for name, spec, weight in terms})
    return task


def check_reward_fields(task: Task, example: Example) -> None:
    """Raise (naming the problem's source) when a user's reward requires a field that `example` lacks."""
    where = example.meta.get("source", example.id)
    for fn, _ in getattr(task.reward, "components", {}).values():
        check = getattr(fn, "check_fields", None)
        if check is not None:
            check(task.fields(example), where)


def close_rewards(task: Task) -> None:
    """Stop the worker processes of a task's user rewards."""
    for fn, _ in getattr(task.reward, "components", {}).values():
        close = getattr(fn, "close", None)
        if close is not None and hasattr(fn, "spec"):
            close()
