"""The configs of `rlvr sft`, `rlvr expert-iter` and `rlvr eval`: the same idiom as `rlvr train`.

Each command takes an optional YAML recipe and dotted `key.sub=value` overrides (`rlvr sft my_sft.yaml
sft.lr=2e-5`), prints its resolved config with `--print-config`, and shares its sections with
`RunConfig`: `model` (name, dtype, device) and `task` (name, kwargs, template, reward) are the very
classes `rlvr train` uses, so a user's reward or a task option works alike everywhere. The settings
of the algorithms themselves are the library's dataclasses (`rlvr.train.sft.SFTConfig`,
`rlvr.train.expert_iter.ExpertIterConfig`), validated by their own `check()`.

The commands' long flags (`--lr`, `--data`, `--task`, ...) remain as shorthands for these keys.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from pydantic import Field, model_validator

from rlvr.config.schema import ModelConfig, TaskConfig, _Strict
from rlvr.train.expert_iter import ExpertIterConfig
from rlvr.train.sft import SFTConfig


def _check(settings, section: str) -> None:
    try:
        settings.check()
    except ValueError as err:
        raise ValueError(f"{section}: {err}") from None


class SFTData(_Strict):
    path: str
    """Training rows, one JSON object per line: a prompt (a string or chat messages) and a response."""
    eval_path: str | None = None
    """Held-out rows for the eval loss."""
    prompt_field: str = "prompt"
    response_field: str = "response"
    system_prompt: str | None = None
    """System message for string prompts; None: the task's, if any."""


class HeldOut(_Strict):
    size: int = Field(200, ge=1)
    """Held-out task problems for the greedy accuracy (with `task`)."""
    max_new_tokens: int | None = Field(None, ge=1)
    """None: the task's response budget (rlvr.tasks.base.response_budget), as every command."""


class SFTRunConfig(_Strict):
    """`rlvr sft`: supervised fine-tuning on (prompt, response) rows."""

    command: Literal["sft"] = "sft"
    seed: int = 0
    run_dir: str
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: SFTData
    template: Literal["chat", "r1_zero", "plain"] | None = None
    """How the data's prompts are rendered; None: the task's template, else the model's chat template."""
    task: TaskConfig | None = None
    """A task to measure held-out accuracy on (and whose template and system prompt the data uses)."""
    sft: SFTConfig = Field(default_factory=SFTConfig)
    eval: HeldOut = Field(default_factory=HeldOut)

    @model_validator(mode="after")
    def _settings(self) -> SFTRunConfig:
        _check(dataclasses.replace(self.sft, seed=self.seed), "sft")
        return self


class ExpertIterRunConfig(_Strict):
    """`rlvr expert-iter`: sample, keep verified answers, fine-tune on them, repeat (STaR)."""

    command: Literal["expert-iter"] = "expert-iter"
    seed: int = 0
    run_dir: str
    model: ModelConfig = Field(default_factory=ModelConfig)
    task: TaskConfig
    engine: str = "hf"
    expert_iter: ExpertIterConfig = Field(default_factory=ExpertIterConfig)
    """Rounds, prompts, k, temperature, ...; `expert_iter.sft` holds the fine-tuning settings."""

    @model_validator(mode="after")
    def _settings(self) -> ExpertIterRunConfig:
        _check(self.expert_iter, "expert_iter")
        return self


class EvalRunConfig(_Strict):
    """`rlvr eval`: unbiased pass@k and friends of a model or a run directory on a task's split."""

    command: Literal["eval"] = "eval"
    model: ModelConfig = Field(default_factory=ModelConfig)
    """model.name: a model, or an `rlvr train` run directory (its latest checkpoint, its task by default)."""
    task: TaskConfig | None = None
    """None: the run's task (its options and template), else gsm8k."""
    data: str | None = None
    """Shorthand for task.kwargs.path (a JSONL file, or a directory with train.jsonl and test.jsonl)."""
    split: str = "test"
    limit: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1)
    """Samples per problem."""
    k: list[int] | None = None
    """pass@k values, each <= n; None: 1 and n."""
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    greedy: bool = False
    max_new_tokens: int | None = Field(None, ge=1)
    """None: the run's rollout.max_new_tokens (evaluating a run on its task), else the task's response budget
    (rlvr.tasks.base.response_budget: arithmetic 64, gsm8k 256, humaneval 512, ...), as every command."""
    stop: list[str] = Field(default_factory=list)
    seed: int = 0
    batch_size: int = Field(64, ge=1)
    entropy: bool = True
    """Also measure the per-token entropy (one extra forward pass)."""
    engine: str = "hf"
    out: str | None = None
    """Output directory; None: the run directory, else ./eval_<task>_<time>."""

    @model_validator(mode="after")
    def _numbers(self) -> EvalRunConfig:
        temperature = 0.0 if self.greedy else self.temperature
        ks = self.k if self.k is not None else sorted({1, self.n})
        bad = [k for k in ks if not 1 <= k <= self.n]
        if bad:
            raise ValueError(f"k={bad}: pass@k needs 1 <= k <= n (n={self.n}); raise n or drop those k")
        if temperature == 0 and self.n > 1:
            raise ValueError("greedy decoding (or temperature 0) gives identical samples; use n=1, or sample with a "
                             "temperature > 0")
        return self
