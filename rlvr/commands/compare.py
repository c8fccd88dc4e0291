"""`rlvr compare STUDY.yaml [--jobs N]` and `rlvr compare --report STUDY_DIR` (see rlvr.compare)."""

from __future__ import annotations

import argparse
import sys


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
    """grad_variance.json in the study directory: each variant's estimator on the first variant's policy and
    prompts (rlvr.compare.grad_variance; a classic environment's through rlvr.envs.runner)."""
    from rlvr.config import load_recipe, resolve
    from rlvr.train.preflight import preflight

    recipe = load_recipe(study.base)
    cfg = resolve(recipe, study.run_overrides(study.variants[0], study.seeds[0]))
    configs = {v.label: resolve(recipe, study.run_overrides(v, study.seeds[0])) for v in study.variants}
    for variant_cfg in configs.values():
        preflight(variant_cfg)
    estimators = {c.algorithm.advantage.name: c.algorithm.advantage.options()
                  for c in sorted(configs.values(), key=lambda c: c.algorithm.advantage.name)}
    if cfg.task.name.startswith("gym:"):
        from rlvr.envs.runner import gym_study_grad_variance

        return gym_study_grad_variance(study, cfg, estimators, batches, checkpoint)
    from rlvr.compare.grad_variance import study_grad_variance

    return study_grad_variance(study, cfg, configs, estimators, batches, checkpoint)


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
