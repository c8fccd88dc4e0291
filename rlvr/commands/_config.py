"""What every config-driven command shares: a recipe and dotted overrides, shorthand flags, --print-config."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("args", nargs="*", metavar="RECIPE|key=value",
                        help="a YAML recipe (first), then dotted overrides such as sft.lr=2e-5 model.device=cpu")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def recipe_and_overrides(items: list[str]) -> tuple[str | None, list[str]]:
    """(the recipe, the key=value overrides) of a command line: the recipe is the first argument, if any."""
    from rlvr.config import ConfigError

    recipe, overrides = None, []
    for item in items:
        if "=" in item:
            overrides.append(item)
        elif recipe is None and not overrides:
            recipe = item
        else:
            raise ConfigError(f"{item!r} is neither the recipe (the first argument) nor a key=value override")
    return recipe, overrides


def command_config(schema: type, args: argparse.Namespace, flags: dict[str, str], extra: list[str] = ()) -> Any:
    """The validated `schema` of a command line: recipe < shorthand flags (and `extra` overrides they make)
    < key=value overrides. `flags` maps an argparse destination to the dotted key it sets; a flag left at
    None sets nothing."""
    from rlvr.config import load_recipe, resolve_as

    recipe_arg, overrides = recipe_and_overrides(args.args)
    recipe = load_recipe(recipe_arg) if recipe_arg is not None else {}
    given = [f"{key}={json.dumps(getattr(args, dest))}" for dest, key in flags.items()
             if getattr(args, dest, None) is not None]
    return resolve_as(schema, recipe, given + list(extra) + overrides)


def print_config(cfg: Any) -> None:
    import yaml

    sys.stdout.write(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
