"""The preflight: what a config alone cannot tell, checked once, before any model loads or data is read.

rlvr.config validates a run from its config alone (types, ranges, meaningless combinations) and imports
nothing above it. Whether the world holds what the config names is asked here, by every command right
after its config resolves: the task and its options exist, the user's rewards load and are callable, the
rollout engine is registered and installed, each logging backend's package is installed. The problems
found are reported together in one ConfigError, worded as the config's own errors ("invalid config: ...").
"""

from __future__ import annotations

import difflib
import importlib.util
from typing import Any

from rlvr.config import ConfigError, RunConfig, TaskConfig
from rlvr.core.registry import unknown_name_message
from rlvr.logging.trackers import backend_problems
from rlvr.rewards.user import RewardSpecError, check_reward_spec
from rlvr.rollout import ENGINES
from rlvr.tasks import TASKS, task_options


def preflight(cfg: Any) -> None:
    """Raise ConfigError naming every problem of `cfg` (a RunConfig, or the config of sft, expert-iter or
    eval) that only the installed code can reveal; return quietly when there is none.

    >>> preflight(RunConfig(task={"name": "arithmatic"}))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    rlvr.config.schema.ConfigError: invalid config: task: unknown task 'arithmatic'; known: ... (did you mean 'arithmetic'?)
    """
    task = getattr(cfg, "task", None)
    if task is not None:
        check_task(task)
    if isinstance(cfg, RunConfig):
        problems = backend_problems(cfg.logging.backends) + engine_problems(cfg.rollout.engine)
        if problems:
            raise ConfigError("invalid config: " + "; ".join(problems))


def check_task(task: TaskConfig) -> None:
    """Raise ConfigError when the task, its options or its rewards do not exist (see `task_problems`)."""
    problems = task_problems(task)
    if problems:
        raise ConfigError("invalid config: task: " + "; ".join(problems))


def task_problems(task: TaskConfig) -> list[str]:
    """Unknown task names and options, and user rewards that cannot load, found without building the task
    (no data is read)."""
    if task.name.startswith("gym:"):
        # a classic RL environment (rlvr.envs.gym); its options are gymnasium.make's keyword arguments
        return [] if len(task.name) > 4 else ["task.name=gym:ENV_ID needs an environment id, e.g. gym:CartPole-v1"]
    if task.name not in TASKS:
        return [unknown_name_message("task", task.name, TASKS)]
    known = task_options(TASKS[task.name])
    problems = reward_spec_problems(task)
    for key in task.kwargs:
        if key in ("template",):
            problems.append("set the prompt template with task.template, not task.kwargs.template")
        elif key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f" (did you mean 'task.kwargs.{close[0]}'?)" if close else ""
            problems.append(f"task {task.name!r} has no option {key!r}{hint}; options: {', '.join(known)}")
    return problems


def reward_spec_problems(task: TaskConfig) -> list[str]:
    """The rewards of `task.reward` / `task.rewards` that are neither registered nor a loadable function
    (a user's file is imported, its function looked up and checked for being callable)."""
    specs = [task.reward] if task.reward is not None else [t.fn for t in task.rewards or []]
    problems = []
    for spec in specs:
        try:
            check_reward_spec(spec)
        except RewardSpecError as e:
            problems.append(str(e))
    return problems


def engine_problems(engine: str) -> list[str]:
    """A rollout engine that is not registered, or whose package is not installed."""
    if engine not in ENGINES:
        return [unknown_name_message("rollout engine", engine, ENGINES)]
    if engine == "vllm" and importlib.util.find_spec("vllm") is None:
        from rlvr.rollout.vllm import PIP_HINT

        return [PIP_HINT]
    return []
