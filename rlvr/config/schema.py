"""The schema of a run: pydantic models for every section of a recipe (`RunConfig` and its parts).

Unknown keys are rejected (`extra="forbid"`), values are checked as they are set, and `RunConfig`
runs the cross-field checks of rlvr.config.validation after every change (checks that need more than the
config, such as whether a task or a package exists, are rlvr.train.preflight's). `algorithm.loss` and
`algorithm.advantage` are built from the registered functions themselves (rlvr.core.losses,
rlvr.core.advantages): each one's keyword options, their defaults and constraints are declared once, in
its signature, and become its config section here (`{name: gae, lam: 0.95}`; a bare name is short for
`{name: NAME}`). Adding a loss or an estimator is one edit.
"""

from __future__ import annotations

import inspect
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from rlvr.config.budgets import response_budget
from rlvr.core.advantages import ADVANTAGE_ESTIMATORS

GROUP_ESTIMATORS = frozenset(ADVANTAGE_ESTIMATORS.having("group_ids"))
"""The estimators that compare the samples of one prompt (registered with needs=("group_ids",))."""


class ConfigError(ValueError):
    """A recipe or override that cannot run; the message says what to change."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --- policy losses and advantage estimators: one config section per registered function --------------

_OPTION_TYPES = (int, float, bool, str)


def _is_option(hint: Any) -> bool:
    """A loss parameter that a config sets (numbers, flags, names), not a runtime argument (tensors, RNGs)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(hint) is Union else [hint]
    bases = [typing.get_args(a)[0] if typing.get_origin(a) is Annotated else a for a in args]
    return all(b in _OPTION_TYPES for b in bases)


class _Named(_Strict):
    """A registered function's config section: its `name` and its options."""

    def options(self) -> dict[str, Any]:
        """The keyword options to call the function with (everything but `name`)."""
        return self.model_dump(exclude={"name"})


def options_config_class(name: str, fn: Any, suffix: str) -> type[BaseModel]:
    """The config section of the function registered as `name`: `name` plus its keyword options with a
    default, as declared (type, default, annotated_types constraints)."""
    fn = inspect.unwrap(fn)
    hints = typing.get_type_hints(fn, include_extras=True)
    fields: dict[str, Any] = {"name": (Literal[name], name)}
    for p in inspect.signature(fn).parameters.values():
        if p.kind is not p.KEYWORD_ONLY or p.default is p.empty:
            continue
        hint = hints.get(p.name, type(p.default) if isinstance(p.default, _OPTION_TYPES) else None)
        if hint is not None and _is_option(hint):
            fields[p.name] = (hint, p.default)
    title = "".join(part.capitalize() for part in name.split("_")) + suffix
    model = create_model(title, __base__=_Named, **fields)
    model.__doc__ = (inspect.getdoc(fn) or "").split("\n\n")[0]
    return model


def loss_config_class(name: str, fn: Any) -> type[BaseModel]:
    """The config section of policy loss `name`: `name` plus the loss's keyword options, as declared."""
    return options_config_class(name, fn, "Loss")


def _classes(kind: str) -> dict[str, type[BaseModel]]:
    from rlvr.core.advantages import ADVANTAGE_ESTIMATORS
    from rlvr.core.losses import POLICY_LOSSES

    registry, suffix = (POLICY_LOSSES, "Loss") if kind == "loss" else (ADVANTAGE_ESTIMATORS, "Advantage")
    return {name: options_config_class(name, fn, suffix) for name, fn in registry.items()}


LOSS_CONFIGS: dict[str, type[BaseModel]] = _classes("loss")
"""Policy loss name -> its config section (rlvr.core.losses declares the options)."""
ADVANTAGE_CONFIGS: dict[str, type[BaseModel]] = _classes("advantage")
"""Advantage estimator name -> its config section (rlvr.core.advantages declares the options)."""

LossConfig = Annotated[Union[tuple(LOSS_CONFIGS.values())], Field(discriminator="name")]  # type: ignore[misc]
AdvantageConfig = Annotated[Union[tuple(ADVANTAGE_CONFIGS.values())], Field(discriminator="name")]  # type: ignore[misc]

NAMED_SECTIONS: dict[str, tuple[dict[str, type[BaseModel]], str, str]] = {
    "loss": (LOSS_CONFIGS, "policy loss", "ppo_clip"),
    "advantage": (ADVANTAGE_CONFIGS, "advantage estimator", "grpo"),
}
"""`algorithm` keys whose section is chosen by its `name`: (sections, what they are, default name)."""

MOVED_KEYS = {
    "gamma": "algorithm.advantage.gamma",
    "lam": "algorithm.advantage.lam",
    "adv_eps": "algorithm.advantage.eps",
    "whiten_advantages": "algorithm.advantage.whiten",
}
"""Former `algorithm` keys -> where they live now (options of the estimators that take them)."""


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


class DifferentialSmoothingConfig(_Strict):
    """Differential Smoothing (arXiv 2511.19942, its DS-GRPO form, Eq. 6; rlvr.core.shaping): after the
    estimator, a correct response's advantage gets -gamma_p * log pi_old(y), a wrong one's +gamma_n *
    log pi_old(y) (sequence log-probability under the trainer's old policy)."""

    gamma_p: float = Field(ge=0)
    """The entropy bonus on correct responses (the paper's main term)."""
    gamma_n: float = Field(0.0, ge=0)
    """The entropy penalty on wrong responses (0: correct responses only, the paper's key observation)."""


class CriticConfig(_Strict):
    """PPO value model: a scalar head on its own copy of the policy backbone.

    The critic has its own parameters and its own AdamW (betas, eps and weight decay from `optim`,
    the same warm-up and schedule as the policy, its own learning rate), so a loss coefficient on the
    value loss would only rescale its gradient before Adam normalises it away: there is none."""

    enabled: bool = False
    lr: float = Field(1e-5, gt=0)
    clip_range: float = Field(0.2, gt=0)
    """Clip of the value update around the old values (PPO clipped value loss)."""
    checkpoint_activations: bool = True
    """Recompute each of the critic's layers in the backward pass instead of keeping its activations (the
    packed forward of Llama-family backbones): its activation memory drops to one layer's for about one
    more critic forward per update."""


class LayerPolicyConfig(_Strict):
    """Bottom-up Policy Optimization (Tan et al. 2025, arXiv 2512.19673): for the first `steps` steps the
    policy-gradient objective (new and old log-probs, ratio, entropy, KL) uses the internal policy of decoder
    layer `layer`, pi_K = softmax(W_u h_K) (rlvr.models.layers), so only layers <= K and the unembedding
    learn; the samples and their rewards still come from the full model; then training goes on as usual."""

    layer: int = Field(ge=1)
    """K, 1-indexed (1: the bottom layer); checked against the model's depth before training starts. BuPO's
    `internal_layer = k` (an index into hidden_states, whose entry 0 is the embeddings) is layer = k + 1."""
    steps: int = Field(ge=1)
    """S: steps trained on pi_K (BuPO's recipes: 30 of 300)."""
    final_norm: bool = False
    """pi_K from norm(h_K) (the classic logit lens) instead of the raw h_K (BuPO's code); at the top layer
    pi_L is always the model's policy, through the norm, as in BuPO's code."""


class AlgorithmConfig(_Strict):
    preset: str | None = None
    advantage: AdvantageConfig = Field(default_factory=lambda: ADVANTAGE_CONFIGS["grpo"]())
    """The advantage estimator and its own options: grpo (eps), reinforce_pp (gamma, whiten), gae (gamma, lam,
    whiten), reinforce_pp_baseline (whiten); reinforce, dr_grpo, rloo and remax take none."""
    loss: LossConfig = Field(default_factory=lambda: LOSS_CONFIGS["ppo_clip"]())
    aggregation: str = "seq_mean_token_mean"
    aggregation_constant: int | None = Field(None, gt=0)
    """Dr.GRPO's constant normaliser (seq_mean_token_sum_norm); None: rollout.max_new_tokens."""
    kl: KLConfig = Field(default_factory=KLConfig)
    entropy_coef: float = Field(0.0, ge=0)
    """Entropy bonus: loss -= entropy_coef * entropy."""
    is_correction: ISCorrectionConfig = Field(default_factory=ISCorrectionConfig)
    dynamic_sampling: DynamicSamplingConfig = Field(default_factory=DynamicSamplingConfig)
    overlong: OverlongConfig = Field(default_factory=OverlongConfig)
    critic: CriticConfig = Field(default_factory=CriticConfig)
    differential_smoothing: DifferentialSmoothingConfig | None = None
    """Shape the advantages of correct and wrong responses apart (arXiv 2511.19942); None: off."""
    layer_policy: LayerPolicyConfig | None = None
    """Train an internal layer policy first (Bottom-up Policy Optimization); None: the full policy throughout."""
    routing_replay: Literal["none", "r2", "r3"] = "none"
    """Mixture-of-experts models (rlvr.models.moe, arXiv 2512.01374): r2 replays the experts the trainer's own
    old-policy forward chose in every update forward of the step; r3 replays the experts the rollout engine
    chose while sampling (rollout.engine=hf) in the old-policy and update forwards. The gate weights stay the
    softmax of the current router logits over the replayed experts, so the router still learns."""
    mask_truncated: bool = False
    """Drop responses cut at rollout.max_new_tokens from the loss (DAPO's overlong filtering, TRL's
    mask_truncated_completions); they still count in their group's baseline."""

    @field_validator("advantage", "loss", mode="before")
    @classmethod
    def _bare_name(cls, value: Any) -> Any:
        """`advantage: gae` is short for `advantage: {name: gae}` (the estimator with its default options)."""
        return {"name": value} if isinstance(value, str) else value


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


    @model_validator(mode="after")
    def _rewards(self) -> TaskConfig:
        """`reward` and `rewards` together, or two rewards logged under one name, for every command that has a
        task section (train, sft, expert-iter, eval). Whether the task and the rewards exist is the
        preflight's question (rlvr.train.preflight), asked before any model loads."""
        from rlvr.config.validation import reward_problems

        problems = reward_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self


class RolloutConfig(_Strict):
    engine: str = "hf"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = None
    """Precision of the rollout engine's copy of the weights. None: the model's own (one shared copy);
    "auto": bfloat16 where the hardware multiplies it natively (a CPU with AVX512_BF16 or AMX, a GPU that
    supports it), else the model's dtype. A lower precision than the trainer's turns the IS correction on
    (unless algorithm.is_correction.enabled is set), and the engine's copy is refreshed after every update."""
    prompts_per_step: int = Field(16, ge=1)
    group_size: int = Field(8, ge=1)
    max_new_tokens: int | None = Field(None, ge=1)
    """Response length limit; None: the task's response budget (arithmetic 64, gsm8k 256, code 512, ...;
    rlvr.config.budgets), the same default every command uses."""
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    stop: list[str] = Field(default_factory=list)
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Passed to the engine as they are; for vllm, to `vllm.LLM` (gpu_memory_utilization, tensor_parallel_size,
    enable_prefix_caching, enable_sleep_mode, max_model_len, ...)."""
    sync_tolerance: float | None = Field(None, gt=0)
    """After each weight push, the engine's and the trainer's log-probs of a fixed probe may differ by at
    most this (max absolute difference, nats); beyond it the run stops with "weight sync failed". None:
    1e-3; for the hf engine's lower-precision copy (rollout.dtype) the copy itself is compared exactly with
    the trainer's weights cast to its dtype, and the probe's gap (precision, which grows as the policy
    sharpens) is only logged."""
    max_staleness: int = Field(0, ge=0)
    """K: how many weight updates old a batch may be when it is trained on. 0: every step samples with the
    weights of the step before (synchronous). K >= 1: generation runs beside training in a rollout worker,
    and the batch of step t is sampled with the weights after step max(0, t - 1 - K), its seed fixed by t,
    so a run is as reproducible as a synchronous one (docs/async.md). The IS correction is switched on
    unless algorithm.is_correction.enabled is set."""
    worker: Literal["process", "in_process"] | None = None
    """Where the engine runs: "process", a rollout worker process of its own with its own copy of the weights
    and threads (rlvr.rollout.process); "in_process", the trainer's process. None: a process when
    max_staleness >= 1, else in the trainer's process."""
    worker_threads: int | None = Field(None, ge=1)
    """Torch threads of the rollout worker process; None: half the CPU cores, and the trainer keeps the rest.
    Set, the trainer keeps its own threads (torch's default: every core), so the two may share cores."""
    worker_timeout_s: float = Field(600.0, gt=0)
    """A rollout worker that takes longer than this for one request (or dies) stops the run with its error."""

    @property
    def worker_process(self) -> bool:
        return self.worker == "process" or (self.worker is None and self.max_staleness >= 1)


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
    """Under torchrun: shard the policy, the reference model and the critic with FSDP2 (fully_shard), one
    unit per decoder layer: parameters, gradients and optimizer state live sharded, 1/N per rank.
    False: every rank holds a full copy (plain data parallelism)."""
    fsdp_reshard: Literal["layer", "step"] = "layer"
    """With train.fsdp, when the full parameters exist. "layer" (ZeRO-3): each decoder layer's are gathered
    for its forward and again for its backward, then freed, and its gradients reduce-scattered at once,
    so the log-prob passes and the update hold one layer's full weights and gradients at a time (besides
    the embeddings and output projection); generation and evaluation gather the whole model. "step": the
    whole model is gathered for the whole step, gradients summed before the optimizer step (peak memory:
    one full copy of weights and gradients; fewer, larger collectives)."""
    collective_timeout_s: float = Field(600.0, gt=0)
    """Under torchrun: a collective that waits longer than this (a rank died or hangs) fails the run."""
    packed: bool = True
    """Log-prob forward passes run each distinct prompt once and the responses without padding
    (Llama-family models; others use the padded forward). Same values up to float rounding."""
    checkpoint_activations: bool = False
    """Recompute each decoder layer of the policy in the backward pass of the update instead of keeping its
    activations (activation / gradient checkpointing): the update's activation memory drops to the layer
    inputs plus one layer's, for about one more forward pass. Same gradients up to float rounding. The
    critic has its own switch (algorithm.critic.checkpoint_activations)."""
    release_memory: bool = True
    """During the update, every freed block of 128 KiB or more goes back to the system (glibc's mmap
    threshold; rlvr.train.memory), so the peak resident memory follows the live tensors instead of what
    the C allocator keeps (GSM8K-shaped step: 8.5 -> 5.2 GiB peak, the update ~4 % slower). No effect
    without glibc."""


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

    @model_validator(mode="before")
    @classmethod
    def _response_budget(cls, data: Any) -> Any:
        """rollout.max_new_tokens left unset: the task's response budget (before the checks that use it)."""
        if not isinstance(data, dict):
            return data
        rollout, task = (v.model_dump() if isinstance(v, BaseModel) else v for v in (data.get("rollout"), data.get("task")))
        rollout = {} if rollout is None else rollout
        if isinstance(rollout, dict) and rollout.get("max_new_tokens") is None:
            name = task.get("name", "arithmetic") if isinstance(task, dict) else "arithmetic"
            data = {**data, "rollout": {**rollout, "max_new_tokens": response_budget(str(name))}}
        return data

    @model_validator(mode="after")
    def _combinations(self) -> RunConfig:
        from rlvr.config.validation import check_combinations

        check_combinations(self)
        return self
