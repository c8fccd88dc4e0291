"""The configs of `rlvr sft`, `rlvr expert-iter` and `rlvr eval`: the same idiom as `rlvr train`.

Each command takes an optional YAML recipe and dotted `key.sub=value` overrides (`rlvr sft my_sft.yaml
sft.lr=2e-5`), prints its resolved config with `--print-config`, and shares its sections with
`RunConfig`: `model` (name, dtype, device) and `task` (name, kwargs, template, reward) are the very
classes `rlvr train` uses, so a user's reward or a task option works alike everywhere. The settings
of the algorithms themselves, `SFTConfig` and `ExpertIterConfig`, are sections like train's, which the
library's loops take as they are (rlvr.train.sft, rlvr.train.expert_iter).

The commands' long flags (`--lr`, `--data`, `--task`, ...) remain as shorthands for these keys.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rlvr.config.schema import ModelConfig, TaskConfig, _Strict
from rlvr.core.aggregation import AGGREGATIONS


def _integer_problem(settings: _Strict, name: str, low: int, *, or_none: bool = False, unset: bool = False) -> list[str]:
    """`name` is not an integer >= `low`; None is allowed with `or_none` (and said so) or `unset`."""
    value = getattr(settings, name)
    if (or_none or unset) and value is None or isinstance(value, int) and value >= low:
        return []
    return [f"{name} must be an integer >= {low}{' or None' if or_none else ''} (got {value!r})"]


class SFTConfig(_Strict):
    """Supervised fine-tuning (rlvr.train.sft): `sft` of `rlvr sft`, `expert_iter.sft` of `rlvr expert-iter`."""

    epochs: int = 1
    """Passes over the records."""
    lr: float = 1e-5
    """AdamW learning rate (constant)."""
    batch_size: int = 8
    """Records per optimizer step."""
    micro_batch_size: int | None = None
    """Records per forward/backward pass (gradient accumulation); None: the whole batch."""
    aggregation: str = "token_mean"
    """How per-token losses become the batch loss (rlvr.core.aggregation)."""
    max_len: int = 512
    """Longest prompt + response in tokens (see rlvr.train.sft for what is cut)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float | None = 1.0
    """Clip the gradient's global norm to this; None: no clipping."""
    seed: int = 0
    """Seed of the per-epoch shuffles (the commands set it from their own `seed`)."""

    @model_validator(mode="after")
    def _settings(self) -> SFTConfig:
        self.check()
        return self

    def check(self) -> None:
        """Raise ValueError naming every setting out of range (also run whenever the section is built or set)."""
        problems = [p for name in ("epochs", "batch_size", "max_len") for p in _integer_problem(self, name, 1)]
        problems += _integer_problem(self, "micro_batch_size", 1, or_none=True)
        if not self.lr > 0:
            problems.append(f"lr must be > 0 (got {self.lr!r})")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must be >= 0 (got {self.weight_decay!r})")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            problems.append(f"max_grad_norm must be > 0 or None (got {self.max_grad_norm!r})")
        if self.aggregation not in AGGREGATIONS:
            problems.append(f"unknown aggregation {self.aggregation!r}; known: {', '.join(AGGREGATIONS)}")
        if problems:
            raise ValueError("invalid SFT settings: " + "; ".join(problems))


class ExpertIterConfig(_Strict):
    """Expert iteration / STaR (rlvr.train.expert_iter): `expert_iter` of `rlvr expert-iter`."""

    rounds: int = 3
    """Sample / filter / fine-tune rounds."""
    prompts: int = 64
    """Training problems sampled per round."""
    k: int = 4
    """Responses sampled per problem."""
    temperature: float = 1.0
    """Sampling temperature (also of the sampled held-out evaluation)."""
    top_p: float = 1.0
    max_new_tokens: int | None = None
    """Response length limit, for sampling and evaluation; None: the task's response budget
    (`Task.max_new_tokens`: arithmetic 64, gsm8k 256, ...), as every command."""
    max_per_prompt: int | None = None
    """Most distinct correct responses kept per problem; None: all."""
    keep_truncated: bool = False
    """Keep correct responses that hit max_new_tokens (see rlvr.train.expert_iter)."""
    restart_from_base: bool = False
    """Fine-tune the base weights each round (STaR) instead of the current ones."""
    eval_size: int = 200
    """Held-out examples for the sampled accuracy (greedy uses their distinct problems)."""
    seed: int = 0
    """Seed of the prompt stream and the samples (the command sets it from its own `seed`)."""
    sft: SFTConfig = Field(default_factory=SFTConfig)
    """The fine-tuning of each round."""

    @model_validator(mode="after")
    def _settings(self) -> ExpertIterConfig:
        self.check()
        return self

    def check(self) -> None:
        """Raise ValueError naming every setting out of range (also run whenever the section is built or set)."""
        problems = _integer_problem(self, "rounds", 0)
        problems += [p for name in ("prompts", "k") for p in _integer_problem(self, name, 1)]
        problems += _integer_problem(self, "max_new_tokens", 1, unset=True)
        problems += _integer_problem(self, "eval_size", 1)
        if not self.temperature > 0:
            problems.append(f"temperature must be > 0: expert iteration needs varied samples (got {self.temperature!r})")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1] (got {self.top_p!r})")
        problems += _integer_problem(self, "max_per_prompt", 1, or_none=True)
        if problems:
            raise ValueError("invalid expert-iteration settings: " + "; ".join(problems))
        self.sft.check()


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
    """None: the task's response budget (rlvr.config.budgets), as every command."""


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
    (rlvr.config.budgets: arithmetic 64, gsm8k 256, humaneval 512, ...), as every command."""
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
