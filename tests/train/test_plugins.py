"""Plugins (RLVR_PLUGINS, rlvr.core.plugins): modules imported at start-up whose registrations a run can use."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rlvr.core.plugins import load_plugins

PLUGIN = '''
from rlvr.core import advantages

@advantages._estimator("plugin_mean_baseline", needs=("group_ids",))
def plugin_mean_baseline(*, rewards, loss_mask, group_ids, **_):
    """A group-mean baseline registered by a plugin."""
    adv = rewards.clone()
    for g in group_ids.unique():
        adv[group_ids == g] -= rewards[group_ids == g].mean()
    out = adv[:, None] * loss_mask
    return out, out
'''


def test_a_plugin_file_or_module_is_imported_once(tmp_path, monkeypatch):
    path = tmp_path / "my_plugin.py"
    path.write_text("LOADS = globals().get('LOADS', 0) + 1\n")
    first, = load_plugins(f" {path} ,")
    again, = load_plugins(str(path))
    assert first is again and first.LOADS == 1
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_plugins("my_plugin")[0].LOADS == 1
    with pytest.raises(FileNotFoundError, match="RLVR_PLUGINS: plugin file .*missing.py not found"):
        load_plugins(str(tmp_path / "missing.py"))
    with pytest.raises(ImportError, match="cannot import plugin module 'no_such_plugin_module'"):
        load_plugins("no_such_plugin_module")


def test_an_estimator_registered_by_a_plugin_is_a_config_choice_of_the_command_line(tiny_dir, tmp_path):
    plugin = tmp_path / "estimators.py"
    plugin.write_text(PLUGIN)
    env = {**os.environ, "RLVR_PLUGINS": str(plugin)}
    args = [sys.executable, "-m", "rlvr", "train", f"model.name={tiny_dir}", "task.name=symbol",
            "algorithm.advantage=plugin_mean_baseline", f"run_dir={tmp_path / 'run'}", "--print-config"]
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "name: plugin_mean_baseline" in out.stdout
    without = subprocess.run(args, capture_output=True, text=True, timeout=120,
                             env={k: v for k, v in env.items() if k != "RLVR_PLUGINS"})
    assert without.returncode == 2 and "plugin_mean_baseline" in without.stderr
