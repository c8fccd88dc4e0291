"""`rlvr compare STUDY.yaml [--jobs N]` and `rlvr compare --report STUDY_DIR` (see rlvr.compare)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", nargs="?", help="a study file (YAML: base recipe, variants, seeds)")
    parser.add_argument("--report", metavar="STUDY_DIR", help="only re-render report.md and figures from existing runs")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time, each pinned to its share of the cores")
    parser.add_argument("--out", help="the study directory (default: the study's `out`, else studies/<name>)")
    parser.add_argument("--grad-variance", action="store_true",
                        help="measure the policy-gradient variance of each variant's advantage estimator (same "
                             "policy, same prompts, --batches independent rollout batches) instead of running")
    parser.add_argument("--batches", type=int, default=8, help="rollout batches for --grad-variance")
    parser.add_argument("--checkpoint", help="for --grad-variance: the policy of this checkpoint directory "
                                              "(default: the base recipe's initial model)")


def measure_grad_variance(study, batches: int, checkpoint: str | None):
    """grad_variance.json in the study directory: each variant's estimator, on the first variant's policy
    and prompts (rlvr.compare.grad_variance)."""
    import json

    from rlvr.compare.grad_variance import gradient_variance
    from rlvr.config import load_recipe, resolve
    from rlvr.train.build import build
    from rlvr.train.preflight import preflight

    recipe = load_recipe(study.base)
    first = study.variants[0]
    cfg = resolve(recipe, study.run_overrides(first, study.seeds[0]))
    configs = {v.label: resolve(recipe, study.run_overrides(v, study.seeds[0])) for v in study.variants}
    for variant_cfg in configs.values():
        preflight(variant_cfg)
    estimators = {c.algorithm.advantage.name: c.algorithm.advantage.options()
                  for c in sorted(configs.values(), key=lambda c: c.algorithm.advantage.name)}
    if cfg.task.name.startswith("gym:"):
        return _gym_grad_variance(study, cfg, estimators, batches, checkpoint)
    aggregation = cfg.algorithm.aggregation
    critic_state, note = _trained_critic(configs, checkpoint)
    if critic_state is not None:  # build with the critic variant's settings, so that the trainer has a critic
        cfg = next(c for c in configs.values() if c.algorithm.critic.enabled)
    trainer = build(cfg, model_path=checkpoint)
    if critic_state is not None:
        trainer.topo.load_module_state(trainer.models.critic, critic_state)
    examples = trainer.models.task.examples("train")[: cfg.rollout.prompts_per_step]
    result = gradient_variance(trainer, examples, estimators, batches=batches, seed=cfg.seed,
                               aggregation=aggregation)
    study.out.mkdir(parents=True, exist_ok=True)
    # one file per policy: the initial model, or a checkpoint (its step directory's name)
    tag = "" if checkpoint is None else "_" + Path(checkpoint).resolve().parent.name.replace("/", "_")
    path = study.out / f"grad_variance{tag}.json"
    record = {"policy": checkpoint or cfg.model.name, "prompts": len(examples), "aggregation": aggregation,
              "estimators": result}
    if note:
        record["critic"] = note
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def _trained_critic(configs: dict, checkpoint: str | None):
    """(the critic's weights from `checkpoint`'s trainer state, a note for the report) when a variant uses gae:
    the learned-critic baseline needs a critic trained alongside the policy measured; without one gae is left
    out (an untrained value head is no baseline)."""
    if not any(c.algorithm.advantage.name == "gae" for c in configs.values()):
        return None, None
    if checkpoint is None:
        return None, "gae left out: the initial policy has no trained critic (measure a critic run's checkpoint)"
    from rlvr.train.checkpoint import load_trainer_state

    step_dir = Path(checkpoint).parent
    state = load_trainer_state(step_dir) if (step_dir / "trainer.pt").exists() else {}
    if "critic" not in state:
        return None, f"gae left out: {step_dir} holds no critic (give the checkpoint of a run with a critic)"
    return state["critic"], f"gae uses the critic trained with this policy ({step_dir})"


def _gym_grad_variance(study, cfg, estimators: dict, batches: int, checkpoint: str | None):
    """The same measurement for a classic environment (rlvr.envs.gym.gym_gradient_variance): the initial MLP
    policy of the first variant's first seed, or a gym run's final one (`--checkpoint RUN_DIR/model`)."""
    import json

    import torch
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


def run(args: argparse.Namespace) -> int:
    from rlvr.compare import StudyError, load_study, run_study, study_from_dir, write_report

    try:
        if args.report:
            study = study_from_dir(args.report)
        elif args.study and args.grad_variance:
            study = load_study(args.study, out=args.out)
            print(f"gradient variance: {measure_grad_variance(study, args.batches, args.checkpoint)}")
        elif args.study:
            if args.jobs < 1:
                raise StudyError("--jobs must be >= 1")
            study = load_study(args.study, out=args.out)
            run_study(study, jobs=args.jobs)
        else:
            raise StudyError("give a study file, or --report STUDY_DIR")
    except StudyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"report: {write_report(study)}")
    return 0
