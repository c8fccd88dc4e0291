"""GSM8K (Cobbe et al., 2021): grade-school math word problems with a numeric answer.

Rows {"question", "answer"} where the answer is a worked solution ending in "#### <number>". The
source is `path` (a directory with train.jsonl and test.jsonl, or one JSONL file split by hash; see
rlvr.tasks.dataset) or, by default, the hub dataset `openai/gsm8k` (config "main"), loaded with
`datasets` (needs network access). `Example.answer` is the final number as text ("1018");
`meta["row"]["answer"]` keeps the worked solution. Graded by rlvr.rewards.gsm8k: the response's
number after "####", else in its last \\boxed{}, else its last number, compared exactly.
"""

from __future__ import annotations

from typing import Any

from rlvr.rewards.gsm8k import extract_gsm8k_answer
from rlvr.tasks.base import TASKS
from rlvr.tasks.dataset import DatasetTask

INSTRUCTION = "Solve the problem step by step. Write the final answer as a number on the last line, after \"####\"."


@TASKS.register("gsm8k")
class GSM8KTask(DatasetTask):
    name = "gsm8k"

    def __init__(
        self,
        *,
        path: str | None = None,
        hub_id: str = "openai/gsm8k",
        hub_config: str | None = "main",
        instruction: str = INSTRUCTION,
        **options: Any,
    ):
        """path: a local copy (takes precedence over the hub)."""
        super().__init__(
            path=path, hub_id=None if path is not None else hub_id, hub_config=hub_config,
            instruction=instruction, **{"reward": "gsm8k", **options},
        )

    def gold(self, value: Any, where: str) -> str:
        number = extract_gsm8k_answer(str(value))
        if number is None:
            raise ValueError(f"{where}: the answer has no '#### <number>' line: {str(value)[-80:]!r}")
        return number

