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
from rlvr.config.schema import MOVED_KEYS, NAMED_SECTIONS, AlgorithmConfig, ConfigError, RunConfig

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """['a.b=1', 'c=x'] -> {'a': {'b': 1}, 'c': 'x'}; values are parsed as YAML scalars/lists. A name given
    to a section that later overrides go into is its `name` (['a=gae', 'a.lam=1'] -> {'a': {'name': 'gae', 'lam': 1}})."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if isinstance(node.get(part), str):  # `algorithm.advantage=gae algorithm.advantage.lam=0.9`
                node[part] = {"name": node[part]}
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
            if cls is AlgorithmConfig and key in MOVED_KEYS:
                raise ConfigError(
                    f"'{where}' is now an option of the advantage estimator: set {MOVED_KEYS[key]} "
                    f"(e.g. algorithm.advantage.name=gae {MOVED_KEYS[key]}=...); see `rlvr presets`"
                )
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean '{path}{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{where}'{hint} (valid here: {', '.join(fields)})")
        annotation = fields[key]
        if cls is AlgorithmConfig and key in NAMED_SECTIONS:
            sections, kind, default = NAMED_SECTIONS[key]
            name = value if isinstance(value, str) else value.get("name", default) if isinstance(value, dict) else None
            if name is not None and name not in sections:
                from rlvr.core.registry import unknown_name_message

                at = where if isinstance(value, str) else f"{where}.name"
                raise ConfigError(unknown_name_message(kind, name, sections) + f" (at '{at}')")
            if isinstance(value, dict):
                _check_keys(sections[name], value, f"{where}.")
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


def _named(algorithm: Any) -> Any:
    """`algorithm` with a bare name (`advantage: gae`, `loss: pg`) written as its section `{name: gae}`."""
    if not isinstance(algorithm, dict):
        return algorithm
    return {k: {"name": v} if k in NAMED_SECTIONS and isinstance(v, str) else v for k, v in algorithm.items()}


def _merge_algorithm(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`update` over `base`; a loss or estimator named differently from base's starts from its own defaults
    (gae's lam does not carry over onto grpo)."""
    base, update = _named(base), _named(update)
    merged = deep_merge(base, update)
    for key in NAMED_SECTIONS:
        new, old = update.get(key), base.get(key)
        if isinstance(new, dict) and isinstance(old, dict) and "name" in new and new["name"] != old.get("name"):
            merged[key] = copy.deepcopy(new)
    return merged


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """deep_merge, with the algorithm section merged by `_merge_algorithm`."""
    merged = deep_merge(base, update)
    if isinstance(base.get("algorithm"), dict) and isinstance(update.get("algorithm"), dict):
        merged["algorithm"] = _merge_algorithm(base["algorithm"], update["algorithm"])
    return merged


def resolve(recipe: dict[str, Any], overrides: list[str] | None = None) -> RunConfig:
    """Recipe dict + overrides -> validated RunConfig, applying the algorithm preset underneath."""
    recipe = recipe or {}
    over = parse_overrides(overrides or [])
    data = _merge(recipe, over)
    # Another task named on the command line does not inherit the recipe task's options.
    new_task = (over.get("task") or {}).get("name")
    if new_task is not None and new_task != (recipe.get("task") or {}).get("name"):
        data["task"]["kwargs"] = copy.deepcopy((over.get("task") or {}).get("kwargs", {}))
    # A run named by its recipe but changed on the command line to another algorithm or task gets a name
    # that says so ("dapo-countdown"), unless the command line names it.
    overridden = (over.get("algorithm") or {}).get("preset") or (over.get("task") or {}).get("name")
    if overridden and "name" not in over and "run_dir" not in over:
        preset_name = (data.get("algorithm") or {}).get("preset") or _named(data.get("algorithm") or {}).get(
            "advantage", {}).get("name", "grpo")
        task_name = str((data.get("task") or {}).get("name", "arithmetic")).replace(":", "-").replace("/", "-")
        data["name"] = f"{preset_name}-{task_name}"
    algorithm = data.get("algorithm") or {}
    preset = algorithm.get("preset")
    if preset is not None:
        if preset not in PRESETS:
            from rlvr.core.registry import unknown_name_message

            raise ConfigError(unknown_name_message("preset", preset, PRESETS))
        data["train"] = deep_merge(PRESET_SCHEDULES.get(preset, {}), data.get("train") or {})
        data["algorithm"] = _merge_algorithm(PRESETS[preset], algorithm)
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
