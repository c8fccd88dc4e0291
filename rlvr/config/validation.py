"""Cross-field checks of a run config: meaningless combinations and names the config's own layer knows
(aggregations, estimators); every problem found is reported at once, before any model is loaded or data
read. What the config alone cannot tell (does the task exist, does the user's reward load, is the engine or
the tracker installed) is the preflight's (rlvr.train.preflight), which every command runs next."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rlvr.config.schema import RunConfig, TaskConfig


def check_combinations(cfg: RunConfig) -> None:
    """Reject meaningless combinations with the reason (docs/design.md, "Presets")."""
    from rlvr.core.advantages import ADVANTAGE_ESTIMATORS
    from rlvr.core.aggregation import AGGREGATIONS
    from rlvr.core.losses import POLICY_LOSSES
    from rlvr.core.registry import unknown_name_message

    alg = cfg.algorithm
    problems: list[str] = []
    if alg.aggregation not in AGGREGATIONS:
        problems.append(unknown_name_message("aggregation", alg.aggregation, AGGREGATIONS))
    estimator = alg.advantage.name
    needs = ADVANTAGE_ESTIMATORS.needs(estimator)
    if "group_ids" in needs and cfg.rollout.group_size < 2:
        problems.append(
            f"advantage estimator {estimator!r} compares samples of one prompt, so it needs "
            f"rollout.group_size >= 2 (got {cfg.rollout.group_size}); use 'reinforce' or 'remax' for one sample"
        )
    valued = ", ".join(ADVANTAGE_ESTIMATORS.having("values"))
    if "values" in needs and not alg.critic.enabled:
        problems.append(f"advantage estimator {estimator!r} needs a critic: set algorithm.critic.enabled=true (or preset ppo)")
    if alg.critic.enabled and "values" not in needs:
        problems.append(
            f"algorithm.critic.enabled=true but the advantage estimator {estimator!r} does not use values; "
            f"use algorithm.advantage={valued} or disable the critic"
        )
    if cfg.train.fsdp and cfg.train.fsdp_reshard == "layer" and alg.layer_policy is not None:
        problems.append("algorithm.layer_policy stops the forward pass inside the model, which per-layer FSDP "
                        "sharding cannot follow; set train.fsdp_reshard=step (or train.fsdp=false)")
    if alg.routing_replay == "r3" and cfg.rollout.engine != "hf":
        problems.append(f"algorithm.routing_replay=r3 replays the experts the rollout engine chose, which only the "
                        f"hf engine records; got rollout.engine={cfg.rollout.engine} (use r2, or rollout.engine=hf)")
    problems += _worker_problems(cfg)
    off_policy = cfg.train.epochs > 1 or cfg.train.mini_batches > 1
    problems += POLICY_LOSSES.problems(alg.loss.name, options=alg.loss.model_dump(exclude={"name"}),
                                       aggregation=alg.aggregation, off_policy=off_policy)
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
    if problems:
        raise ValueError("; ".join(problems))


def reward_problems(task: TaskConfig) -> list[str]:
    """`task.reward` and `task.rewards` both set, or two rewards under one log name."""
    if task.reward is not None and task.rewards is not None:
        return ["set task.reward (one reward) or task.rewards (a weighted list), not both"]
    names = [t.name or reward_term_name(t.fn) for t in task.rewards or []]
    if len(set(names)) < len(names):
        return [f"task.rewards has two rewards named alike ({', '.join(names)}); give each a distinct name"]
    return []


def reward_term_name(spec: str) -> str:
    """The log name of a reward: the function's name ("my_rewards.py:score" -> "score")."""
    return spec.rpartition(":")[2] or spec


def _worker_problems(cfg: RunConfig) -> list[str]:
    """What a rollout worker process (rollout.worker, rollout.max_staleness) cannot do yet."""
    r = cfg.rollout
    if r.max_staleness >= 1 and r.worker == "in_process":
        return [f"rollout.max_staleness={r.max_staleness} generates beside training, in a rollout worker process; "
                "set rollout.worker=process (or leave it unset)"]
    if not r.worker_process:
        return []
    unsupported = [(cfg.model.lora is not None, "model.lora (LoRA)"),
                   (cfg.train.fsdp, "train.fsdp")]
    return [f"a rollout worker process (rollout.worker=process or rollout.max_staleness >= 1) does not support {what} "
            "yet; run it with the engine in the trainer's process (rollout.max_staleness=0, rollout.worker unset)"
            for bad, what in unsupported if bad]
