"""Loading a run config: YAML recipes (a path or a bundled name), dotted `key.sub=value` overrides, the
preset applied underneath, unknown keys named with the nearest valid one, and pydantic's errors as one
readable line."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from rlvr.config.presets import PRESET_SCHEDULES, PRESETS
from rlvr.config.schema import LOSS_CONFIGS, AlgorithmConfig, ConfigError, RunConfig

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


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


def resolve_as(schema: type[BaseModel], recipe: dict[str, Any], overrides: list[str] | None = None) -> Any:
    """Recipe dict + overrides -> a validated `schema` (the configs of sft, expert-iter, eval)."""
    data = deep_merge(recipe or {}, parse_overrides(overrides or []))
    _check_keys(schema, data, "")
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None


def _check_keys(cls: Any, data: Any, path: str) -> None:
    """Reject unknown keys with the nearest valid name (before pydantic, which cannot suggest)."""
    if not isinstance(data, dict):
        return
    fields = _fields_of(cls)
    for key, value in data.items():
        where = f"{path}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean '{path}{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{where}'{hint} (valid here: {', '.join(fields)})")
        annotation = fields[key]
        if key == "loss" and cls is AlgorithmConfig and isinstance(value, dict):
            name = value.get("name", "ppo_clip")
            sub = LOSS_CONFIGS.get(name)
            if sub is None:
                from rlvr.core.registry import unknown_name_message

                raise ConfigError(unknown_name_message("policy loss", name, LOSS_CONFIGS) + f" (at '{where}.name')")
            _check_keys(sub, value, f"{where}.")
        else:
            for sub in _sections(annotation):
                _check_keys(sub, value, f"{where}.")


def _fields_of(cls: Any) -> dict[str, Any]:
    """Field name -> annotation of a pydantic model or a dataclass (a dataclass's are resolved type hints)."""
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return {k: f.annotation for k, f in cls.model_fields.items()}
    import typing

    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name) for f in dataclasses.fields(cls)}


def _sections(annotation: Any) -> list[Any]:
    """The nested config classes (pydantic models or dataclasses) an annotation holds (X, or X | None)."""
    import typing

    args = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else (annotation,)
    return [a for a in args if isinstance(a, type) and (issubclass(a, BaseModel) or dataclasses.is_dataclass(a))]


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
        if e["type"] == "missing":
            lines.append(f"{loc} is required (set {loc}=... on the command line or in the recipe)")
            continue
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
