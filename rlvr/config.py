"""The configuration of a run: pydantic models, YAML recipes, dotted overrides, presets, validation.

A recipe is YAML mapping onto `RunConfig`. `algorithm.preset` names a combination from DESIGN.md
section 4; any key the recipe or a `key.sub=value` override sets wins over the preset. Unknown keys are
rejected with the nearest valid name, and combinations that make no sense are rejected here, before a
model is loaded (`RunConfig` validators), with the reason.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"

GROUP_ESTIMATORS = {"grpo", "dr_grpo", "rloo", "reinforce_pp_baseline"}


class ConfigError(ValueError):
    """A recipe or override that cannot run; the message says what to change."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --- policy losses: each variant's own parameters in its own class (prime-rl style) -------------


class PGLoss(_Strict):
    """Plain REINFORCE surrogate -A * log p."""

    name: Literal["pg"] = "pg"


class PPOClipLoss(_Strict):
    """PPO clipped surrogate (Schulman et al. 2017) with DAPO's decoupled clip-higher."""

    name: Literal["ppo_clip"] = "ppo_clip"
    clip_low: float = Field(0.2, gt=0, lt=1)
    """epsilon_low: the ratio is clipped below at 1 - clip_low."""
    clip_high: float = Field(0.2, gt=0)
    """epsilon_high: the ratio is clipped above at 1 + clip_high (DAPO: 0.28)."""
    clip_c: float | None = Field(None, gt=1)
    """Dual-clip constant c > 1 bounding the loss of negative advantages (Ye et al. 2020); None: off."""


class GSPOLoss(_Strict):
    """GSPO sequence-level ratio (Zheng et al. 2025); the paper's clip range is tiny."""

    name: Literal["gspo"] = "gspo"
    clip_low: float = Field(3e-4, gt=0, lt=1)
    clip_high: float = Field(4e-4, gt=0)


class CISPOLoss(_Strict):
    """CISPO (MiniMax-M1 2025): clipped, stop-gradient IS weight times A log p."""

    name: Literal["cispo"] = "cispo"
    clip_low: float | None = Field(None, gt=0, le=1)
    """None: no lower bound on the IS weight (as in the paper); else the weight is at least 1 - clip_low."""
    clip_high: float = Field(4.0, gt=0)


class ClipCovLoss(_Strict):
    """Clip-Cov (Cui et al. 2025): detach the gradient of a few high-covariance tokens.

    Defaults follow the paper's scripts (PPO clip 1.0/1.0, i.e. the ratio stays in [0, 2])."""

    name: Literal["clip_cov"] = "clip_cov"
    clip_low: float = Field(1.0, gt=0, le=1)
    clip_high: float = Field(1.0, gt=0)
    clip_cov_ratio: float = Field(2e-4, gt=0, le=1)
    """Fraction of tokens whose gradient is detached."""
    clip_cov_lb: float = 1.0
    clip_cov_ub: float = 5.0


class KLCovLoss(_Strict):
    """KL-Cov (Cui et al. 2025): a KL penalty on the tokens of largest covariance."""

    name: Literal["kl_cov"] = "kl_cov"
    kl_cov_ratio: float = Field(2e-3, gt=0, le=1)
    """Fraction of tokens that get the KL penalty (the paper's 7B setting)."""
    kl_cov_coef: float = Field(1.0, ge=0)


LossConfig = Annotated[
    Union[PGLoss, PPOClipLoss, GSPOLoss, CISPOLoss, ClipCovLoss, KLCovLoss], Field(discriminator="name")
]


class KLConfig(_Strict):
    coef: float = Field(0.0, ge=0)
    """KL coefficient beta; 0 disables the KL term and the reference model is never loaded."""
    estimator: Literal["k1", "k2", "k3", "abs"] = "k3"
    placement: Literal["loss", "reward"] = "loss"
    """'loss': differentiable term in the loss (GRPO); 'reward': detached per-token penalty (PPO/RLOO)."""
    adaptive: bool = False
    """Adaptive coefficient of Ziegler et al. 2019 (needs target)."""
    target: float | None = Field(None, gt=0)
    horizon: int = Field(10000, gt=0)


class ISCorrectionConfig(_Strict):
    """Training-inference importance-sampling correction (MiniRL, truncated IS)."""

    enabled: bool = False
    level: Literal["token", "sequence"] = "token"
    mode: Literal["truncate", "mask"] = "truncate"
    cap: float = Field(2.0, gt=0)


class DynamicSamplingConfig(_Strict):
    """DAPO dynamic sampling: drop groups whose rewards are all equal, sample more until the batch is full."""

    enabled: bool = False
    max_rounds: int = Field(3, ge=1)
    """Generation rounds per step at most (the first included); then train on what was kept."""
    max_no_signal_steps: int = Field(5, ge=1)
    """Stop with an error after this many steps in a row in which no sample earned any reward (dynamic
    sampling then trains nothing: the task is too hard for the model, or the reward is broken)."""
    max_oversample: float = Field(4.0, ge=1)
    """Each round asks for (groups still missing) / (keep rate observed so far) prompts, at most this
    many times the groups missing; the kept groups beyond the batch size are dropped (DAPO, verl)."""


class OverlongConfig(_Strict):
    """DAPO soft overlong punishment (added to the reward)."""

    enabled: bool = False
    cache_len: int = Field(16, gt=0)
    """Length of the soft-penalty interval before max_new_tokens."""


class CriticConfig(_Strict):
    """PPO value model: a scalar head on its own copy of the policy backbone.

    The critic has its own parameters and its own AdamW (betas, eps and weight decay from `optim`,
    the same warm-up and schedule as the policy, its own learning rate), so a loss coefficient on the
    value loss would only rescale its gradient before Adam normalises it away: there is none."""

    enabled: bool = False
    lr: float = Field(1e-5, gt=0)
    clip_range: float = Field(0.2, gt=0)
    """Clip of the value update around the old values (PPO clipped value loss)."""


class AlgorithmConfig(_Strict):
    preset: str | None = None
    advantage: str = "grpo"
    loss: LossConfig = Field(default_factory=PPOClipLoss)
    aggregation: str = "seq_mean_token_mean"
    aggregation_constant: int | None = Field(None, gt=0)
    """Dr.GRPO's constant normaliser (seq_mean_token_sum_norm); None: rollout.max_new_tokens."""
    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(1.0, ge=0, le=1)
    adv_eps: float = Field(1e-6, gt=0)
    whiten_advantages: bool = True
    """Whiten GAE advantages over the batch's valid tokens."""
    kl: KLConfig = Field(default_factory=KLConfig)
    entropy_coef: float = Field(0.0, ge=0)
    """Entropy bonus: loss -= entropy_coef * entropy."""
    is_correction: ISCorrectionConfig = Field(default_factory=ISCorrectionConfig)
    dynamic_sampling: DynamicSamplingConfig = Field(default_factory=DynamicSamplingConfig)
    overlong: OverlongConfig = Field(default_factory=OverlongConfig)
    critic: CriticConfig = Field(default_factory=CriticConfig)
    mask_truncated: bool = False
    """Drop responses cut at rollout.max_new_tokens from the loss (DAPO's overlong filtering, TRL's
    mask_truncated_completions); they still count in their group's baseline."""


class LoraSettings(_Strict):
    """LoRA adapters through peft (rlvr.models.lora). Defaults follow "LoRA Without Regret" (all linear
    layers, alpha 32; use a learning rate about 10x the full fine-tuning one)."""

    rank: int = Field(32, ge=1)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"
    """peft's target_modules: "all-linear" (every linear layer but the output head) or module names."""


class ModelConfig(_Strict):
    name: str = "smollm2-135m-instruct"
    """An embedded name, a Hugging Face hub id or a local directory in Hugging Face format."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "auto"
    """'auto': cuda if available, else cpu."""
    trust_remote_code: bool = False
    cache_dir: str | None = None
    lora: LoraSettings | None = None
    """Train LoRA adapters only (the `peft` extra); the reference model is the base with adapters off."""


class RewardTerm(_Strict):
    """One weighted reward of `task.rewards`."""

    fn: str
    """A registered reward ("math", "format", ...) or your own: "file.py:function" / "package.module:function"."""
    weight: float = 1.0
    name: str | None = None
    """Its name in the logs (metric reward_NAME); default: the function's name."""


class TaskConfig(_Strict):
    name: str = "arithmetic"
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of the task (see rlvr.tasks)."""
    template: Literal["chat", "r1_zero", "plain"] | None = None
    """Prompt template; None: the task's own default."""
    reward: str | None = None
    """Replace the task's reward: a registered reward name or your own function, "file.py:function" or
    "package.module:function", called as fn(response, answer, **fields) (rlvr.rewards.user)."""
    rewards: list[RewardTerm] | None = None
    """Several weighted rewards instead (each logged as reward_NAME); the first decides `correct`."""
    reward_timeout_s: float | None = Field(10.0, gt=0)
    """Your own reward functions run in a worker process, at most this long per response (past it: reward 0,
    counted in reward_timeouts); None: in the trainer's process, without a limit."""


class RolloutConfig(_Strict):
    engine: str = "hf"
    prompts_per_step: int = Field(16, ge=1)
    group_size: int = Field(8, ge=1)
    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    stop: list[str] = Field(default_factory=list)
    sync_tolerance: float = Field(1e-3, gt=0)
    """After each weight push, the engine's and the trainer's log-probs of a fixed probe may differ by at
    most this (max absolute difference, nats); beyond it the run stops with "weight sync failed"."""


class OptimConfig(_Strict):
    lr: float = Field(1e-6, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    warmup_steps: int = Field(0, ge=0)
    scheduler: Literal["constant", "linear", "cosine"] = "constant"


class TrainConfig(_Strict):
    steps: int = Field(50, ge=1)
    epochs: int = Field(1, ge=1)
    """Passes over each rollout batch."""
    mini_batches: int = Field(1, ge=1)
    """Optimizer steps per pass (the rollout batch is split into this many mini-batches, groups whole)."""
    micro_batch_size: int | None = Field(None, ge=1)
    """Sequences per forward/backward (gradient accumulation); None: the whole mini-batch."""
    max_bad_steps: int = Field(3, ge=1)
    """Consecutive steps with a non-finite loss or gradient that stop the run."""
    fsdp: bool = False
    """Under torchrun: shard the policy, the reference model and the critic with FSDP2 (fully_shard):
    parameters, gradients and optimizer state live sharded between the phases of a step, which gather
    the full parameters. False: every rank holds a full copy (plain data parallelism)."""
    collective_timeout_s: float = Field(600.0, gt=0)
    """Under torchrun: a collective that waits longer than this (a rank died or hangs) fails the run."""
    packed: bool = True
    """Log-prob forward passes run each distinct prompt once and the responses without padding
    (Llama-family models; others use the padded forward). Same values up to float rounding."""


class EvalConfig(_Strict):
    every: int = Field(10, ge=0)
    """Evaluate every this many steps (and at the start and the end); 0: never."""
    size: int = Field(200, ge=1)
    temperature: float | None = None
    """None: the training temperature."""
    greedy: bool = True
    """Also evaluate greedily (eval_accuracy_greedy)."""
    max_new_tokens: int | None = None


class CheckpointConfig(_Strict):
    every: int = Field(25, ge=0)
    """Checkpoint every this many steps (and at the end); 0: only at the end."""
    keep_last: int = Field(1, ge=1)
    """Checkpoints kept (the newest); each holds the model and, by default, the optimizer state."""
    optimizer: bool = True
    """Save the optimizer state (AdamW: twice the model's size in float32) so that a resumed run continues
    exactly; false: model-only checkpoints, and a resumed run restarts the optimizer (it says so)."""


class LoggingConfig(_Strict):
    backends: list[str] = Field(default_factory=lambda: ["jsonl"])
    """Where metrics go besides RUN_DIR/metrics.jsonl (always written): tensorboard, wandb, mlflow
    (rlvr.logging.trackers; each configured by its usual environment variables)."""
    project: str | None = None
    """The W&B project / MLflow experiment (WANDB_PROJECT / MLFLOW_EXPERIMENT_NAME win); None: "rlvr"."""


class RunConfig(_Strict):
    name: str = "run"
    seed: int = 0
    run_dir: str | None = None
    """Default: runs/<name>."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    log_samples: int = Field(64, ge=0)
    """Rollouts per step written to samples.jsonl."""
    reflection_phrases: list[str] | None = None
    """Phrases counted by the reflection_rate metric (rlvr.eval.behaviour); None: its default list."""

    @model_validator(mode="after")
    def _combinations(self) -> RunConfig:
        check_combinations(self)
        return self


# --- presets (DESIGN.md section 4) -----------------------------------------------------------------

PRESETS: dict[str, dict[str, Any]] = {
    "reinforce": {"advantage": "reinforce", "loss": {"name": "pg"}, "aggregation": "seq_mean_token_sum_norm"},
    "grpo": {
        "advantage": "grpo",
        "loss": {"name": "ppo_clip", "clip_low": 0.2, "clip_high": 0.2},
        "aggregation": "seq_mean_token_mean",
        "kl": {"estimator": "k3", "placement": "loss"},
    },
    "dr_grpo": {
        "advantage": "dr_grpo",
        "loss": {"name": "ppo_clip", "clip_low": 0.2, "clip_high": 0.2},
        "aggregation": "seq_mean_token_sum_norm",
    },
    "dapo": {
        "advantage": "grpo",
        "loss": {"name": "ppo_clip", "clip_low": 0.2, "clip_high": 0.28},
        "aggregation": "token_mean",
        "dynamic_sampling": {"enabled": True},
        "overlong": {"enabled": True},
        "kl": {"coef": 0.0},
    },
    "gspo": {"advantage": "grpo", "loss": {"name": "gspo"}, "aggregation": "seq_mean_token_mean"},
    "cispo": {"advantage": "grpo", "loss": {"name": "cispo"}, "aggregation": "token_mean"},
    "rloo": {
        "advantage": "rloo",
        "loss": {"name": "pg"},
        "aggregation": "seq_mean_token_sum_norm",
        "kl": {"estimator": "k1", "placement": "reward"},
    },
    "remax": {"advantage": "remax", "loss": {"name": "pg"}, "aggregation": "seq_mean_token_sum_norm"},
    "reinforce_pp": {
        "advantage": "reinforce_pp",
        "loss": {"name": "ppo_clip"},
        "aggregation": "token_mean",
        "kl": {"estimator": "k1", "placement": "reward"},
    },
    "ppo": {
        "advantage": "gae",
        "loss": {"name": "ppo_clip"},
        "aggregation": "token_mean",
        "critic": {"enabled": True},
        "kl": {"estimator": "k1", "placement": "reward"},
    },
    "minirl": {
        "advantage": "grpo",
        "loss": {"name": "ppo_clip"},
        "aggregation": "token_mean",
        "is_correction": {"enabled": True, "level": "token", "mode": "truncate"},
    },
}
"""Each preset's settings; values not named keep the field defaults (which follow the papers).

reinforce, rloo and remax differentiate log pi(y|x) = sum_t log pi_t, a per-sequence token *sum*
(Williams 1992; Ahmadian et al. 2024; Li et al. 2023; TRL's RLOOTrainer): `seq_mean_token_sum_norm`
divides that sum by the constant rollout.max_new_tokens (not by |y|, which would be the length bias
Dr. GRPO describes), only to keep the learning-rate scale of the token-mean presets."""

PRESET_SCHEDULES: dict[str, dict[str, Any]] = {
    # GSPO (Zheng et al. 2025, sec. 5.1): "we partition each batch of rollout data into four
    # minibatches for gradient updates".
    "gspo": {"mini_batches": 4},
    # CISPO (MiniMax-M1, sec. 3.1) is built for off-policy updates; the paper's count is not stated
    # where we could check it, so rlvr uses GSPO's four.
    "cispo": {"mini_batches": 4},
    # DAPO's recipe: 512 prompts per rollout batch in mini-batches of 32 prompts, 16 updates per batch.
    "dapo": {"mini_batches": 16},
    # MiniRL ("Stabilizing RL with LLMs", arXiv:2512.01374) studies N mini-batches per rollout batch;
    # rlvr's default is N = 4, so that the IS correction and the clip act.
    "minirl": {"mini_batches": 4},
    # PPO for LLMs (TRL's PPOTrainer defaults; Ouyang et al. 2022): 4 epochs over each rollout batch.
    "ppo": {"epochs": 4},
}
"""Each preset's update schedule (train.epochs x train.mini_batches), under any the recipe sets. With
fewer prompt groups than mini-batches (a small batch, or dynamic sampling short of groups), each
mini-batch holds one group."""


def check_combinations(cfg: RunConfig) -> None:
    """Reject meaningless combinations with the reason (DESIGN.md section 4)."""
    from rlvr.core.advantages import ADVANTAGE_ESTIMATORS
    from rlvr.core.aggregation import AGGREGATIONS
    from rlvr.core.registry import unknown_name_message

    alg = cfg.algorithm
    problems: list[str] = []
    problems += _task_problems(cfg.task)
    from rlvr.logging.trackers import backend_problems

    problems += backend_problems(cfg.logging.backends)
    from rlvr.rollout.base import ENGINES

    if cfg.rollout.engine not in ENGINES:
        problems.append(unknown_name_message("rollout engine", cfg.rollout.engine, ENGINES))
    if alg.advantage not in ADVANTAGE_ESTIMATORS:
        problems.append(unknown_name_message("advantage estimator", alg.advantage, ADVANTAGE_ESTIMATORS))
    if alg.aggregation not in AGGREGATIONS:
        problems.append(unknown_name_message("aggregation", alg.aggregation, AGGREGATIONS))
    if alg.advantage in GROUP_ESTIMATORS and cfg.rollout.group_size < 2:
        problems.append(
            f"advantage estimator {alg.advantage!r} compares samples of one prompt, so it needs "
            f"rollout.group_size >= 2 (got {cfg.rollout.group_size}); use 'reinforce' or 'remax' for one sample"
        )
    if alg.advantage == "gae" and not alg.critic.enabled:
        problems.append("advantage estimator 'gae' needs a critic: set algorithm.critic.enabled=true (or preset ppo)")
    if alg.critic.enabled and alg.advantage != "gae":
        problems.append(
            f"algorithm.critic.enabled=true but the advantage estimator {alg.advantage!r} does not use values; "
            "use advantage=gae or disable the critic"
        )
    if alg.loss.name == "gspo" and alg.aggregation == "token_mean":
        problems.append(
            "the gspo loss is a sequence-level objective; token_mean would weight sequences by length. "
            "Use aggregation=seq_mean_token_mean"
        )
    off_policy = cfg.train.epochs > 1 or cfg.train.mini_batches > 1
    if alg.loss.name == "pg" and off_policy:
        problems.append(
            "the pg loss has no importance ratio, so updates after the first mini-batch would be off-policy "
            "without correction; use loss ppo_clip (or cispo) with train.epochs>1 or train.mini_batches>1"
        )
    if alg.dynamic_sampling.enabled and cfg.rollout.group_size < 2:
        problems.append("dynamic sampling drops groups of equal rewards and needs rollout.group_size >= 2")
    if alg.overlong.enabled and alg.overlong.cache_len > cfg.rollout.max_new_tokens:
        problems.append(
            f"algorithm.overlong.cache_len ({alg.overlong.cache_len}) must not exceed rollout.max_new_tokens "
            f"({cfg.rollout.max_new_tokens})"
        )
    if alg.kl.adaptive and alg.kl.target is None:
        problems.append("algorithm.kl.adaptive=true needs algorithm.kl.target (the KL to track)")
    if alg.kl.adaptive and alg.kl.coef == 0:
        problems.append("algorithm.kl.adaptive=true needs a starting algorithm.kl.coef > 0")
    if alg.kl.coef > 0 and alg.kl.placement == "loss" and alg.kl.estimator == "k1":
        problems.append(
            "algorithm.kl.estimator=k1 with placement=loss has zero expected gradient (E_pi[grad log pi] = 0): "
            "use k3 (forward KL, GRPO) or k2 (reverse KL) in the loss, or algorithm.kl.placement=reward with k1 "
            "(reverse KL)"
        )
    if alg.advantage == "reinforce_pp_baseline" and alg.gamma != 1.0:
        problems.append(
            f"advantage estimator 'reinforce_pp_baseline' is defined for algorithm.gamma=1 (as in OpenRLHF); "
            f"got {alg.gamma}. Use 'reinforce_pp' for a discounted reward-to-go"
        )
    if alg.loss.name == "clip_cov" and not alg.loss.clip_cov_lb < alg.loss.clip_cov_ub:
        problems.append(
            f"algorithm.loss.clip_cov_lb ({alg.loss.clip_cov_lb}) must be below clip_cov_ub ({alg.loss.clip_cov_ub})"
        )
    if cfg.train.fsdp and cfg.model.lora is not None:
        problems.append("train.fsdp=true with model.lora is not supported yet; LoRA runs replicate the model "
                        "(set train.fsdp=false)")
    if problems:
        raise ValueError("; ".join(problems))


def _task_problems(task: TaskConfig) -> list[str]:
    """Unknown task names and options, found without building the task (no data is read)."""
    from rlvr.core.registry import unknown_name_message
    from rlvr.tasks import TASKS
    from rlvr.tasks.base import task_options

    if task.name.startswith("gym:"):
        # a classic RL environment (rlvr.envs.gym); its options are gymnasium.make's keyword arguments
        return [] if len(task.name) > 4 else ["task.name=gym:ENV_ID needs an environment id, e.g. gym:CartPole-v1"]
    if task.name not in TASKS:
        return [unknown_name_message("task", task.name, TASKS)]
    known = task_options(TASKS[task.name])
    problems = _reward_problems(task)
    for key in task.kwargs:
        if key in ("template",):
            problems.append("set the prompt template with task.template, not task.kwargs.template")
        elif key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f" (did you mean 'task.kwargs.{close[0]}'?)" if close else ""
            problems.append(f"task {task.name!r} has no option {key!r}{hint}; options: {', '.join(known)}")
    return problems


def _reward_problems(task: TaskConfig) -> list[str]:
    """A user's reward that cannot be loaded or called, found by loading it (no data is read)."""
    from rlvr.rewards.user import RewardSpecError, check_reward_spec

    if task.reward is not None and task.rewards is not None:
        return ["set task.reward (one reward) or task.rewards (a weighted list), not both"]
    specs = [task.reward] if task.reward is not None else [t.fn for t in task.rewards or []]
    problems = []
    for spec in specs:
        try:
            check_reward_spec(spec)
        except RewardSpecError as e:
            problems.append(str(e))
    names = [t.name or reward_term_name(t.fn) for t in task.rewards or []]
    if len(set(names)) < len(names):
        problems.append(f"task.rewards has two rewards named alike ({', '.join(names)}); give each a distinct name")
    return problems


def reward_term_name(spec: str) -> str:
    """The log name of a reward: the function's name ("my_rewards.py:score" -> "score")."""
    return spec.rpartition(":")[2] or spec


# --- loading recipes and overrides -------------------------------------------------------------------


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """['a.b=1', 'c=x'] -> {'a': {'b': 1}, 'c': 'x'}; values are parsed as YAML scalars/lists."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override of {part!r}")
        node[parts[-1]] = value
    return out


def deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _loss_class(name: str) -> type[BaseModel] | None:
    for cls in (PGLoss, PPOClipLoss, GSPOLoss, CISPOLoss, ClipCovLoss, KLCovLoss):
        if cls.model_fields["name"].default == name:
            return cls
    return None


def _check_keys(cls: type[BaseModel], data: Any, path: str) -> None:
    """Reject unknown keys with the nearest valid name (before pydantic, which cannot suggest)."""
    if not isinstance(data, dict):
        return
    fields = cls.model_fields
    for key, value in data.items():
        where = f"{path}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean '{path}{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{where}'{hint} (valid here: {', '.join(fields)})")
        annotation = fields[key].annotation
        if key == "loss" and cls is AlgorithmConfig and isinstance(value, dict):
            name = value.get("name", "ppo_clip")
            sub = _loss_class(name)
            if sub is None:
                from rlvr.core.registry import unknown_name_message

                names = [c.model_fields["name"].default for c in (PGLoss, PPOClipLoss, GSPOLoss, CISPOLoss, ClipCovLoss, KLCovLoss)]
                raise ConfigError(unknown_name_message("policy loss", name, names) + f" (at '{where}.name')")
            _check_keys(sub, value, f"{where}.")
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            _check_keys(annotation, value, f"{where}.")


def resolve(recipe: dict[str, Any], overrides: list[str] | None = None) -> RunConfig:
    """Recipe dict + overrides -> validated RunConfig, applying the algorithm preset underneath."""
    recipe = recipe or {}
    over = parse_overrides(overrides or [])
    data = deep_merge(recipe, over)
    # Another task named on the command line does not inherit the recipe task's options.
    new_task = (over.get("task") or {}).get("name")
    if new_task is not None and new_task != (recipe.get("task") or {}).get("name"):
        data["task"]["kwargs"] = copy.deepcopy((over.get("task") or {}).get("kwargs", {}))
    # A run named by its recipe but changed on the command line to another algorithm or task gets a name
    # that says so ("dapo-countdown"), unless the command line names it.
    overridden = (over.get("algorithm") or {}).get("preset") or (over.get("task") or {}).get("name")
    if overridden and "name" not in over and "run_dir" not in over:
        preset_name = (data.get("algorithm") or {}).get("preset") or (data.get("algorithm") or {}).get("advantage", "grpo")
        task_name = str((data.get("task") or {}).get("name", "arithmetic")).replace(":", "-").replace("/", "-")
        data["name"] = f"{preset_name}-{task_name}"
    algorithm = data.get("algorithm") or {}
    preset = algorithm.get("preset")
    if preset is not None:
        if preset not in PRESETS:
            from rlvr.core.registry import unknown_name_message

            raise ConfigError(unknown_name_message("preset", preset, PRESETS))
        data["train"] = deep_merge(PRESET_SCHEDULES.get(preset, {}), data.get("train") or {})
        merged = deep_merge(PRESETS[preset], algorithm)
        # A loss named differently from the preset's starts from that loss's own defaults.
        user_loss = algorithm.get("loss") or {}
        if "name" in user_loss and user_loss["name"] != PRESETS[preset].get("loss", {}).get("name"):
            merged["loss"] = copy.deepcopy(user_loss)
        data["algorithm"] = merged
    _check_keys(RunConfig, data, "")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None


def _format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-after"))
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}" if loc else msg)
    return "invalid config: " + "; ".join(lines)


def load_recipe(path_or_name: str | Path | None) -> dict[str, Any]:
    """A YAML file path, or the name of a bundled recipe (rlvr/recipes/NAME.yaml); None: the default."""
    if path_or_name is None:
        path_or_name = "default"
    path = Path(path_or_name)
    if not path.exists():
        bundled = RECIPES_DIR / f"{path_or_name}.yaml"
        if bundled.exists():
            path = bundled
        else:
            known = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
            raise ConfigError(f"recipe {str(path_or_name)!r} not found: not a file, and not a bundled recipe ({', '.join(known)})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        context = getattr(err, "context", None)
        raise ConfigError(f"{where}: YAML syntax error: {problem}" + (f" ({context})" if context else "")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a YAML mapping, got {type(data).__name__}")
    return data


def to_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
