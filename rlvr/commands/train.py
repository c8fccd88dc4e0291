"""`rlvr train [RECIPE.yaml] [key.sub=value ...] [--resume RUN_DIR] [--overwrite]`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rlvr.commands._config import recipe_and_overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "args", nargs="*", metavar="RECIPE|key=value",
        help="a recipe (YAML path or bundled name; default: the default recipe), then dotted overrides "
        "such as algorithm.preset=dapo rollout.group_size=8",
    )
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its last checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    parser.add_argument("--no-progress", action="store_true", help="no live progress bar")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run(args: argparse.Namespace) -> int:
    """Errors (a bad recipe, data, model; a stopped run) reach the one error wrapper of rlvr.cli."""
    from rich.console import Console

    from rlvr.config import ConfigError, load_recipe, resolve, to_yaml

    console = Console(stderr=False, soft_wrap=True)  # long lines stay whole in a log file
    recipe_arg, overrides = recipe_and_overrides(args.args)
    if args.resume:
        if recipe_arg is not None:
            raise ConfigError("--resume takes its recipe from RUN_DIR/config.yaml; give only key=value overrides")
        config_path = Path(args.resume) / "config.yaml"
        if not config_path.exists():
            raise ConfigError(f"cannot resume: {config_path} not found (is {args.resume} a run directory?)")
        recipe = load_recipe(config_path)
        if "command" in recipe:  # written by rlvr sft / expert-iter, whose runs have their own config
            raise ConfigError(f"{args.resume} is a run of `rlvr {recipe['command']}`, which `rlvr train --resume` "
                              f"cannot continue; run `rlvr {recipe['command']}` again (with --overwrite)")
        overrides.append(f"run_dir={args.resume}")
    else:
        recipe = load_recipe(recipe_arg)
    cfg = resolve(recipe, overrides)
    from rlvr.train.preflight import preflight

    preflight(cfg)
    if args.print_config:
        sys.stdout.write(to_yaml(cfg))
        return 0
    if cfg.task.name.startswith("gym:"):  # a classic RL environment on the same core (rlvr.envs)
        from rlvr.envs.runner import train_gym_recipe

        run_dir = train_gym_recipe(cfg, resume=bool(args.resume), overwrite=args.overwrite, console=console,
                                   distributed=int(os.environ.get("WORLD_SIZE", "1")) > 1, checked=True)
    else:
        from rlvr.train.runner import train

        run_dir = train(cfg, resume=bool(args.resume), overwrite=args.overwrite, console=console,
                        progress=not args.no_progress, checked=True)
    console.print(f"done: {run_dir}")
    return 0
