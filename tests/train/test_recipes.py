"""The bundled recipes (rlvr/recipes/*.yaml): each resolves, names its source, and builds its task.

No model is loaded and no data is read: tasks are constructed (which checks their option values
and reward names) but their examples are never built.
"""

from __future__ import annotations

import pytest
import yaml

from rlvr.config import RECIPES_DIR, load_recipe, resolve
from rlvr.rewards.base import REWARDS
from rlvr.rollout import ENGINES
from rlvr.tasks import get_task
from tests.conftest import SHARED_DATA

RECIPES = sorted(RECIPES_DIR.glob("*.yaml"))
CPU_RECIPES = [p for p in RECIPES if p.stem.endswith("_cpu")]
HUB_RECIPES = [p for p in RECIPES if p.stem != "default" and not p.stem.endswith("_cpu")]
EMBEDDED = "smollm2-135m-instruct"
# Tasks that need neither network nor a data file.
GENERATED_TASKS = {"arithmetic", "countdown", "knights_knaves", "symbol"}
# Tasks whose data ships beside the repository (../shared/data), as a CPU recipe names it.
SHIPPED_DATA = {"gsm8k": "../shared/data/gsm8k"}


def _ids(paths):
    return [p.stem for p in paths]


def test_recipe_sets_are_complete():
    assert (RECIPES_DIR / "default.yaml") in RECIPES
    assert HUB_RECIPES, "no published-settings recipes found"
    # Every hub recipe has a CPU-sized sibling and every CPU recipe a hub original.
    stems = {p.stem for p in RECIPES}
    for hub in HUB_RECIPES:
        assert f"{hub.stem}_cpu" in stems, f"{hub.name} has no CPU sibling {hub.stem}_cpu.yaml"
    for cpu in CPU_RECIPES:
        assert cpu.stem.removesuffix("_cpu") in stems, f"{cpu.name} has no full-size original"


@pytest.mark.parametrize("path", RECIPES, ids=_ids(RECIPES))
def test_recipe_resolves_and_builds_its_task(path):
    raw = yaml.safe_load(path.read_text())
    assert isinstance(raw, dict) and raw, f"{path.name} is empty"
    cfg = resolve(load_recipe(path))  # unknown keys and meaningless combinations raise here
    # By bundled name as well as by path.
    assert resolve(load_recipe(path.stem)) == cfg
    assert cfg.rollout.engine in ENGINES
    kwargs = dict(cfg.task.kwargs)
    if cfg.task.template is not None:
        kwargs["template"] = cfg.task.template
    task = get_task(cfg.task.name, **kwargs)  # option values and reward names; builds no examples
    assert not getattr(task, "_cache", {}), "constructing a task must not build its examples"
    if "reward" in cfg.task.kwargs:
        assert cfg.task.kwargs["reward"] in REWARDS


@pytest.mark.parametrize("path", HUB_RECIPES + CPU_RECIPES, ids=_ids(HUB_RECIPES + CPU_RECIPES))
def test_recipe_starts_with_a_comment_naming_its_source(path):
    lines = path.read_text().splitlines()
    assert lines and lines[0].startswith("#"), f"{path.name} must start with a comment header"
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line)
    text = "\n".join(header)
    assert text.lstrip("# ").startswith("Source:"), f"{path.name}: the header's first words must be 'Source: ...'"
    assert "arxiv" in text.lower() or "github.com/" in text, f"{path.name}: name the paper (arXiv id) or repository"
    if path in HUB_RECIPES:
        # Honest about gaps: every full-size recipe says what rlvr cannot express.
        assert "cannot express" in text, f"{path.name}: say what rlvr cannot express"


@pytest.mark.parametrize("path", CPU_RECIPES, ids=_ids(CPU_RECIPES))
def test_cpu_recipe_runs_on_the_embedded_model_without_network(path):
    cfg = resolve(load_recipe(path))
    assert cfg.model.name == EMBEDDED
    assert cfg.model.device in ("cpu", "auto")
    assert cfg.model.dtype == "float32"  # docs/design.md, "The CPU machines": train in float32 on CPU
    assert "hub_id" not in cfg.task.kwargs
    if cfg.task.name in SHIPPED_DATA:
        # data shipped beside the repository (../shared/data), read from the repository root
        assert cfg.task.kwargs["path"] == SHIPPED_DATA[cfg.task.name]
        assert (SHARED_DATA / cfg.task.name).is_dir()
        assert cfg.rollout.max_new_tokens <= 256  # GSM8K rationales need room; ~20 minutes on 2 cores
    else:
        assert cfg.task.name in GENERATED_TASKS, f"{path.name}: use a generated task (no network, no data path)"
        assert "path" not in cfg.task.kwargs
        assert cfg.rollout.max_new_tokens <= 64
    # Sized for minutes on 2 cores.
    assert cfg.train.steps <= 10
    assert cfg.rollout.prompts_per_step * cfg.rollout.group_size <= 64
    assert cfg.eval.every == 0 or cfg.eval.size <= 32


@pytest.mark.parametrize("path", CPU_RECIPES, ids=_ids(CPU_RECIPES))
def test_cpu_recipe_keeps_the_algorithm_of_its_original(path):
    cpu = resolve(load_recipe(path))
    full = resolve(load_recipe(path.with_name(path.stem.removesuffix("_cpu") + ".yaml")))
    a, b = cpu.algorithm, full.algorithm
    assert a.preset == b.preset
    assert a.advantage.model_dump() == b.advantage.model_dump()
    assert a.loss.model_dump() == b.loss.model_dump()
    assert a.aggregation == b.aggregation
    assert (a.kl.coef, a.kl.estimator, a.kl.placement) == (b.kl.coef, b.kl.estimator, b.kl.placement)
    assert a.entropy_coef == b.entropy_coef
    assert a.critic.enabled == b.critic.enabled and a.critic.clip_range == b.critic.clip_range
    assert a.dynamic_sampling.enabled == b.dynamic_sampling.enabled
    assert a.overlong.enabled == b.overlong.enabled
    assert a.mask_truncated == b.mask_truncated
    assert cpu.train.epochs == full.train.epochs
    assert (cpu.train.mini_batches > 1) == (full.train.mini_batches > 1)  # on- vs off-policy updates
    assert cpu.task.template == full.task.template
    assert (cpu.optim.betas, cpu.optim.weight_decay) == (full.optim.betas, full.optim.weight_decay)


@pytest.mark.parametrize("path", HUB_RECIPES, ids=_ids(HUB_RECIPES))
def test_hub_recipe_names_a_hub_model(path):
    cfg = resolve(load_recipe(path))
    name = cfg.model.name
    assert "/" in name and not name.startswith(("/", ".", "~")), f"{path.name}: model.name must be a hub id"
    assert cfg.model.name != EMBEDDED
    if cfg.task.name == "hf":
        assert "/" in cfg.task.kwargs["hub_id"]
