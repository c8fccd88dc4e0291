"""Plugins: modules imported when a run starts, before any work, so that what they register (an advantage
estimator, a policy loss, a task, a reward) is known to the run, on every rank of a torchrun launch.

`RLVR_PLUGINS` lists them, separated by commas: an importable module name (`my_lab.estimators`) or the path of a
Python file (`./my_estimators.py`). Each is imported once per process.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

ENV_VAR = "RLVR_PLUGINS"


def load_plugins(spec: str | None = None) -> list[ModuleType]:
    """Import the plugins of `spec` (default: the RLVR_PLUGINS environment variable); returns their modules."""
    spec = os.environ.get(ENV_VAR, "") if spec is None else spec
    return [_load(item.strip()) for item in spec.split(",") if item.strip()]


def _load(item: str) -> ModuleType:
    if not item.endswith(".py"):
        try:
            return importlib.import_module(item)
        except ImportError as err:
            raise ImportError(f"{ENV_VAR}: cannot import plugin module {item!r}: {err}") from err
    path = Path(item).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{ENV_VAR}: plugin file {item} not found")
    name = f"rlvr_plugin_{path.stem}_{abs(hash(str(path)))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
