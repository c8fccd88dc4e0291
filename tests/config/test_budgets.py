"""Response budgets: the config knows each bundled task's without importing the tasks, and agrees with them."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from rlvr.config import resolve
from rlvr.config.budgets import DEFAULT_RESPONSE_BUDGET, RESPONSE_BUDGETS, response_budget


def _python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_config_imports_nothing_above_it_and_still_knows_the_task_budgets():
    """A fresh process: resolving a config loads no task, reward, rollout, model or trainer code, and the
    budgets it uses are those the task classes declare once they load."""
    printed = _python("""
        import sys
        from rlvr.config import resolve
        budgets = {name: resolve({"task": {"name": name}}).rollout.max_new_tokens
                   for name in ("arithmetic", "symbol", "countdown", "knights_knaves", "code", "humaneval", "gsm8k",
                                "jsonl", "hf", "multiple_choice")}
        above = sorted({m.split(".")[1] for m in sys.modules if m.startswith("rlvr.") and m.count(".") >= 1}
                       - {"config", "core"})
        print(above)
        from rlvr.tasks import TASKS
        print(sorted(name for name in TASKS if TASKS[name].max_new_tokens != budgets[name]))
        print(sorted(set(TASKS) - set(budgets)))
    """)
    assert printed.splitlines() == ["[]", "[]", "[]"]


def test_registering_a_task_records_its_budget():
    from rlvr.tasks.base import TASKS, Task

    before = dict(RESPONSE_BUDGETS)
    try:
        @TASKS.register("long_answers_for_a_test")
        class LongAnswers(Task):
            name = "long_answers_for_a_test"
            max_new_tokens = 1234

        assert response_budget("long_answers_for_a_test") == 1234
        assert resolve({"task": {"name": "long_answers_for_a_test"}}).rollout.max_new_tokens == 1234
    finally:
        TASKS.pop("long_answers_for_a_test", None)
        RESPONSE_BUDGETS.clear()
        RESPONSE_BUDGETS.update(before)


@pytest.mark.parametrize(("name", "budget"), [("arithmetic", 64), ("gsm8k", DEFAULT_RESPONSE_BUDGET), ("nothere", 256),
                                              ("gym:CartPole-v1", 500)])
def test_response_budget(name, budget):
    assert response_budget(name) == budget
