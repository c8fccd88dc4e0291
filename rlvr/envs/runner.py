"""`rlvr train task.name=gym:ENV_ID ...`: a recipe run on a classic RL environment (rlvr.envs.gym), with the run
directory, metrics and final policy of an LLM run."""

from __future__ import annotations

from pathlib import Path

import torch

from rlvr.config import RunConfig
from rlvr.envs.gym import GymAlgorithm, train_gym
from rlvr.logging.jsonl import JsonlWriter
from rlvr.train.console import finish
from rlvr.train.run_dir import prepare_run_dir


def is_gym_task(cfg: RunConfig) -> bool:
    return cfg.task.name.startswith("gym:")


def gym_algorithm(cfg: RunConfig):
    """The recipe's algorithm as rlvr.envs.gym.GymAlgorithm; settings that have no meaning for an MLP policy
    in a classic environment are refused here, before any work, each with the override that turns it off."""
    alg = cfg.algorithm
    unsupported = {
        "algorithm.kl.coef=0": alg.kl.coef > 0,  # no reference policy
        "algorithm.is_correction.enabled=false": alg.is_correction.enabled,  # the sampler is the trainer
        "algorithm.dynamic_sampling.enabled=false": alg.dynamic_sampling.enabled,
        "algorithm.overlong.enabled=false": alg.overlong.enabled,
        "algorithm.mask_truncated=false": alg.mask_truncated,
        "algorithm.differential_smoothing=null": alg.differential_smoothing is not None,  # no `correct`
        "algorithm.layer_policy=null": alg.layer_policy is not None,
        "algorithm.routing_replay=none": alg.routing_replay != "none",
        "model.lora=null": cfg.model.lora is not None,
        # the environments are stepped by the trainer itself, synchronously
        "rollout.max_staleness=0": cfg.rollout.max_staleness > 0,
        "rollout.worker=in_process": cfg.rollout.worker == "process",
    }
    bad = [fix for fix, on in unsupported.items() if on]
    if bad:
        raise ValueError(f"{cfg.task.name} trains an MLP policy, for which these settings have no meaning: "
                         f"set {', '.join(bad)}")
    critic = alg.critic
    return GymAlgorithm(
        estimator=alg.advantage.name, options=alg.advantage.options(), loss=alg.loss.name,
        loss_params=alg.loss.options(), aggregation=alg.aggregation, constant=alg.aggregation_constant,
        epochs=cfg.train.epochs, mini_batches=cfg.train.mini_batches, entropy_coef=alg.entropy_coef,
        value_lr=critic.lr,
        # the LLM default clip (0.2, for rewards in [0, 1]) only when the recipe asks for it explicitly
        value_clip=critic.clip_range if "clip_range" in critic.model_fields_set else None,
    )


def train_gym_recipe(cfg: RunConfig, *, resume: bool = False, overwrite: bool = False, console=None,
                     distributed: bool = False, checked: bool = False) -> Path:
    """`rlvr train task.name=gym:ENV_ID ...`: a classic RL environment on the same core (rlvr.envs.gym).

    The recipe maps onto it: rollout.prompts_per_step start states x rollout.group_size episodes per
    iteration (train.steps iterations), rollout.max_new_tokens the episode step limit, the preset's
    advantage estimator, policy loss, aggregation and update schedule (train.epochs x train.mini_batches)
    with their options, the entropy bonus, optim.lr, the critic's lr (gae: a value network), task.kwargs for
    gymnasium.make. The run directory gets config.yaml, metrics.jsonl, plots and the final policy (and value
    network) in model/ (one process; no intermediate checkpoints: a run takes seconds)."""
    if console is None:
        from rich.console import Console

        console = Console(soft_wrap=True)
    if not checked:
        from rlvr.train.preflight import preflight

        preflight(cfg)
    if resume or distributed:
        raise ValueError("gym runs take seconds: run them again instead of --resume, and in one process")
    algo = gym_algorithm(cfg)
    run_dir = prepare_run_dir(cfg, resume=False, overwrite=overwrite, console=console)
    console.print(f"run directory: {run_dir}")
    metrics_log = JsonlWriter(run_dir / "metrics.jsonl")

    def record(step: int, metrics: dict) -> None:
        metrics_log.write({"step": step, **metrics})
        console.print(f"step {step}: mean return {metrics['reward_mean']:.1f}, episode length "
                      f"{metrics['response_len_mean']:.1f}")

    result = train_gym(cfg.task.name[4:], algo, iterations=cfg.train.steps, starts=cfg.rollout.prompts_per_step,
                       group_size=cfg.rollout.group_size, lr=cfg.optim.lr, max_steps=cfg.rollout.max_new_tokens,
                       seed=cfg.seed, env_kwargs=dict(cfg.task.kwargs), on_iteration=record)
    (run_dir / "model").mkdir(exist_ok=True)
    torch.save(result.policy.state_dict(), run_dir / "model" / "policy.pt")
    if result.critic is not None:
        torch.save(result.critic.state_dict(), run_dir / "model" / "critic.pt")
    finish(run_dir, console, metrics_log)
    return run_dir


def gym_study_grad_variance(study, cfg: RunConfig, estimators: dict, batches: int, checkpoint: str | None) -> Path:
    """`rlvr compare --grad-variance` for a classic environment (rlvr.envs.gym.gym_gradient_variance): each
    variant's estimator on the initial MLP policy of the first variant's first seed (`cfg`), or a gym run's
    final one (`--checkpoint RUN_DIR/model`)."""
    import json

    import yaml

    from rlvr.envs.gym import gym_gradient_variance, new_policy


    env_id, env_kwargs = cfg.task.name[4:], dict(cfg.task.kwargs)
    torch.manual_seed(cfg.seed)  # train_gym's initialisation
    policy = new_policy(env_id, env_kwargs)
    tag = ""
    if checkpoint is not None:
        path = Path(checkpoint)
        if not (path / "policy.pt").exists():
            raise RuntimeError(f"{path} has no policy.pt: give the model/ directory of a finished gym run")
        policy.load_state_dict(torch.load(path / "policy.pt", weights_only=True))
        run_cfg = yaml.safe_load((path.parent / "config.yaml").read_text())
        tag = f"_step_{int(run_cfg['train']['steps']):06d}"
    result = gym_gradient_variance(env_id, policy, estimators, starts=cfg.rollout.prompts_per_step,
                                   group_size=cfg.rollout.group_size, max_steps=cfg.rollout.max_new_tokens,
                                   batches=batches, seed=cfg.seed, aggregation=cfg.algorithm.aggregation,
                                   env_kwargs=env_kwargs)
    study.out.mkdir(parents=True, exist_ok=True)
    out = study.out / f"grad_variance{tag}.json"
    out.write_text(json.dumps({"policy": checkpoint or f"{env_id}: initial MLP policy (seed {cfg.seed})",
                               "prompts": cfg.rollout.prompts_per_step, "aggregation": cfg.algorithm.aggregation,
                               "critic": "a value network fitted to this policy on separate episodes",
                               "estimators": result}, indent=1) + "\n")
    return out
