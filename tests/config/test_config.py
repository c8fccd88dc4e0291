"""Recipes, overrides, presets and the rejection of meaningless combinations."""

from __future__ import annotations

from typing import Annotated

import pytest
from annotated_types import Gt

from rlvr.config import PRESETS, ConfigError, load_recipe, parse_overrides, resolve
from rlvr.core.advantages import Discount


def test_default_recipe_resolves_to_grpo_on_the_embedded_model():
    cfg = resolve(load_recipe(None))
    assert cfg.model.name == "smollm2-135m-instruct"
    assert cfg.task.name == "arithmetic"
    assert cfg.algorithm.advantage.name == "grpo" and cfg.algorithm.advantage.eps == 1e-6
    assert cfg.algorithm.loss.name == "ppo_clip"
    assert cfg.algorithm.kl.coef == 0.0


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_resolves(preset):
    cfg = resolve({"algorithm": {"preset": preset}})
    spec = PRESETS[preset]
    advantage = spec["advantage"] if isinstance(spec["advantage"], dict) else {"name": spec["advantage"]}
    assert all(getattr(cfg.algorithm.advantage, k) == v for k, v in advantage.items())
    assert cfg.algorithm.loss.name == spec["loss"]["name"]
    assert cfg.algorithm.aggregation == spec["aggregation"]


def test_preset_values_and_overrides():
    dapo = resolve({"algorithm": {"preset": "dapo"}})
    assert (dapo.algorithm.loss.clip_low, dapo.algorithm.loss.clip_high) == (0.2, 0.28)
    assert dapo.algorithm.dynamic_sampling.enabled and dapo.algorithm.overlong.enabled
    assert dapo.algorithm.aggregation == "token_mean"
    over = resolve({"algorithm": {"preset": "dapo"}}, ["algorithm.loss.clip_high=0.3", "rollout.group_size=4"])
    assert over.algorithm.loss.clip_high == 0.3 and over.algorithm.loss.clip_low == 0.2
    assert over.rollout.group_size == 4
    # Naming another loss under a preset starts from that loss's own defaults.
    cispo = resolve({"algorithm": {"preset": "grpo"}}, ["algorithm.loss.name=cispo"])
    assert cispo.algorithm.loss.name == "cispo" and cispo.algorithm.loss.clip_high == 4.0


def test_parse_overrides_types():
    assert parse_overrides(["a.b=1", "a.c=0.5", "d=true", "e=[x, y]", "f=hello"]) == {
        "a": {"b": 1, "c": 0.5}, "d": True, "e": ["x", "y"], "f": "hello"
    }
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_overrides(["novalue"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["rollout.group_sise=4"], "did you mean 'rollout.group_size'"),
        (["algorithm.los.name=pg"], "did you mean 'algorithm.loss'"),
        (["algorithm.loss.clip_hihg=0.3"], "did you mean 'algorithm.loss.clip_high'"),
        (["algorithm.preset=grpoo"], "unknown preset 'grpoo'; known: reinforce, grpo"),
        (["algorithm.loss.name=ppo"], "unknown policy loss 'ppo'"),
        (["algorithm.advantage=rlooo"], "unknown advantage estimator 'rlooo'"),
        (["algorithm.aggregation=mean"], "unknown aggregation 'mean'"),
        (["rollout.group_size=1"], "needs rollout.group_size >= 2"),
        (["algorithm.advantage=gae"], "'gae' needs a critic"),
        (["algorithm.critic.enabled=true"], "does not use values"),
        (["algorithm.loss.name=gspo", "algorithm.aggregation=token_mean"], "gspo loss is a sequence-level"),
        (["algorithm.preset=reinforce", "train.epochs=2"], "pg loss has no importance ratio"),
        (["algorithm.kl.adaptive=true", "algorithm.kl.coef=0.1"], "needs algorithm.kl.target"),
        (["algorithm.kl.coef=0.1", "algorithm.kl.estimator=k1", "algorithm.kl.placement=loss"],
         "zero expected gradient"),
        (["algorithm.advantage=reinforce_pp_baseline", "algorithm.advantage.gamma=0.9"],
         "unknown config key 'algorithm.advantage.gamma'"),
        (["algorithm.gamma=0.9"], "set algorithm.advantage.gamma"),
        (["algorithm.whiten_advantages=false"], "set algorithm.advantage.whiten"),
        (["algorithm.preset=ppo", "algorithm.advantage.lam=1.5"], "algorithm.advantage.gae.lam"),
        (["algorithm.preset=cispo", "algorithm.loss.clip_low=1.5"], "clip_low"),
        (["algorithm.loss.name=clip_cov", "algorithm.loss.clip_cov_lb=5", "algorithm.loss.clip_cov_ub=1"],
         "clip_cov_lb"),
        (["algorithm.preset=ppo", "algorithm.critic.coef=0.5"], "unknown config key 'algorithm.critic.coef'"),
        (["rollout.temperature=-1"], "rollout.temperature"),
        (["algorithm.loss.clip_c=0.5"], "clip_c"),
        (["rollout.max_staleness=1", "rollout.worker=in_process"], "set rollout.worker=process"),
        (["rollout.max_staleness=1", "model.lora.rank=8"], "does not support model.lora (LoRA) yet"),
        (["rollout.worker=process", "train.fsdp=true"], "does not support train.fsdp yet"),
        (["rollout.max_staleness=-1"], "rollout.max_staleness"),
    ],
)
def test_bad_configs_are_rejected_with_the_reason(overrides, message):
    with pytest.raises(ConfigError, match=None) as err:
        resolve(load_recipe(None), overrides)
    assert message in str(err.value)


def test_another_task_on_the_command_line_drops_the_recipe_task_options():
    cfg = resolve(load_recipe(None), ["task.name=symbol"])
    assert cfg.task.name == "symbol" and cfg.task.kwargs == {}
    cfg = resolve(load_recipe(None), ["task.name=symbol", "task.kwargs.max_len=4"])
    assert cfg.task.kwargs == {"max_len": 4}
    assert resolve(load_recipe(None), ["task.kwargs.digits=2"]).task.kwargs["n_terms"] == 2


def test_presets_show_aggregation_schedule_and_kl_gradient():
    """`rlvr presets` shows each preset's aggregation, update schedule and, where KL
    is on, which KL gradient it follows."""
    from rlvr.commands.presets import preset_rows

    rows = {r["preset"]: r for r in preset_rows()}
    assert rows["rloo"]["aggregation"] == "per-sequence token sum / max_new_tokens"
    assert rows["grpo"]["aggregation"] == "sequence mean of token means (1/|y|)"
    assert rows["gspo"]["schedule"] == "1 epoch x 4 mini-batches"
    assert rows["ppo"]["schedule"] == "4 epochs x 1 mini-batch"
    assert rows["grpo"]["schedule"].endswith("(on-policy)")
    assert "forward KL(pi_ref||pi) per visited state" in rows["grpo"]["kl"]
    assert "reverse KL(pi||pi_ref) of the whole response" in rows["rloo"]["kl"]
    assert rows["dapo"]["kl"] == "off"
    # a KL whose coefficient is 0 by default says so (rloo, reinforce_pp and ppo name k1 in the reward)
    for name in ("rloo", "reinforce_pp", "ppo", "grpo"):
        assert rows[name]["kl"].startswith("off (kl.coef 0); with algorithm.kl.coef > 0: "), name
    assert rows["ppo"]["advantage"] == "gae lam=0.95"


def test_ppo_preset_uses_the_gae_lambda_of_trl_and_openrlhf():
    cfg = resolve({"algorithm": {"preset": "ppo"}})
    assert cfg.algorithm.advantage.name == "gae" and cfg.algorithm.advantage.lam == 0.95
    assert cfg.algorithm.advantage.gamma == 1.0
    # a recipe's own lambda wins; another estimator does not inherit it
    assert resolve({"algorithm": {"preset": "ppo", "advantage": {"lam": 1.0}}}).algorithm.advantage.lam == 1.0
    other = resolve({"algorithm": {"preset": "ppo"}}, ["algorithm.advantage=grpo", "algorithm.critic.enabled=false"])
    assert other.algorithm.advantage.name == "grpo"


def test_kl_gradient_table():
    from rlvr.core.kl import kl_gradient

    assert kl_gradient("k3", "loss") == "forward KL(pi_ref||pi) per visited state"
    assert kl_gradient("k2", "loss") == "reverse KL(pi||pi_ref) per visited state"
    assert kl_gradient("k1", "reward") == "reverse KL(pi||pi_ref) of the whole response"
    assert "zero expected gradient" in kl_gradient("k1", "loss")
    with pytest.raises(KeyError):
        kl_gradient("k9", "loss")


def test_each_loss_declares_its_options_once_in_its_signature():
    """algorithm.loss.<option> comes from the loss function's keyword options: names, defaults, constraints."""
    import inspect

    from rlvr.config import LOSS_CONFIGS
    from rlvr.config.schema import loss_config_class
    from rlvr.core.losses import POLICY_LOSSES

    assert set(LOSS_CONFIGS) == set(POLICY_LOSSES)
    for name, fn in POLICY_LOSSES.items():
        defaults = {p.name: p.default for p in inspect.signature(fn).parameters.values()
                    if p.kind is p.KEYWORD_ONLY and p.name not in ("generator", "selected")}
        assert {k: v for k, v in LOSS_CONFIGS[name]().model_dump().items() if k != "name"} == defaults, name

    def my_loss(logprobs, old_logprobs, advantages, mask, *, beta: Annotated[float, Gt(0)] = 0.5, selected=None):
        """A new loss: one function, and its config follows."""

    section = loss_config_class("my_loss", my_loss)
    assert section().model_dump() == {"name": "my_loss", "beta": 0.5}
    with pytest.raises(Exception, match="greater than 0"):
        section(beta=-1.0)


def test_each_estimator_declares_its_options_once_in_its_signature():
    """algorithm.advantage is the estimator's own section: its options only, from its signature."""
    from rlvr.config.schema import ADVANTAGE_CONFIGS, options_config_class
    from rlvr.core.advantages import ADVANTAGE_ESTIMATORS, estimator_options

    assert set(ADVANTAGE_CONFIGS) == set(ADVANTAGE_ESTIMATORS)
    for name, fn in ADVANTAGE_ESTIMATORS.items():
        assert ADVANTAGE_CONFIGS[name]().options() == estimator_options(fn), name

    def my_estimator(*, rewards, loss_mask, token_rewards, gamma: Discount = 0.99, **_):
        """A new estimator: one function, and its config follows."""

    section = options_config_class("my_estimator", my_estimator, "Advantage")
    assert section().model_dump() == {"name": "my_estimator", "gamma": 0.99}
    with pytest.raises(Exception, match="less than or equal to 1"):
        section(gamma=1.5)


def test_an_estimator_named_anew_starts_from_its_own_defaults():
    recipe = {"algorithm": {"preset": "reinforce_pp", "advantage": {"gamma": 0.9, "whiten": False}}}
    cfg = resolve(recipe)
    assert cfg.algorithm.advantage.model_dump() == {"name": "reinforce_pp", "gamma": 0.9, "whiten": False}
    # reinforce_pp_baseline has no gamma: the recipe's does not follow it onto the other estimator
    cfg = resolve(recipe, ["algorithm.advantage=reinforce_pp_baseline"])
    assert cfg.algorithm.advantage.model_dump() == {"name": "reinforce_pp_baseline", "whiten": True}
    cfg = resolve(recipe, ["algorithm.advantage=reinforce_pp", "algorithm.advantage.gamma=0.5"])
    assert cfg.algorithm.advantage.options() == {"gamma": 0.5, "whiten": True}
    # the same for a loss named anew, over a recipe (not only over a preset)
    cfg = resolve({"algorithm": {"loss": {"name": "ppo_clip", "clip_high": 0.28}}}, ["algorithm.loss=cispo"])
    assert cfg.algorithm.loss.name == "cispo"


def test_every_command_defaults_to_the_task_response_budget():
    """One default per task for max_new_tokens, whichever command runs it; a value set wins."""
    from rlvr.config.commands import EvalRunConfig, ExpertIterRunConfig, HeldOut
    from rlvr.tasks import TASKS
    from rlvr.tasks.base import response_budget

    assert {name: TASKS[name].max_new_tokens for name in ("arithmetic", "gsm8k", "humaneval")} == {
        "arithmetic": 64, "gsm8k": 256, "humaneval": 512}
    for name in ("arithmetic", "gsm8k", "countdown", "knights_knaves", "code"):
        assert resolve({"task": {"name": name}}).rollout.max_new_tokens == TASKS[name].max_new_tokens == response_budget(name)
    assert resolve({"task": {"name": "gsm8k"}, "rollout": {"max_new_tokens": 32}}).rollout.max_new_tokens == 32
    assert resolve({}, ["task.name=gym:CartPole-v1"]).rollout.max_new_tokens == 500
    # eval, sft's held-out accuracy and expert-iter leave it unset: the task's budget is used when they run
    assert EvalRunConfig().max_new_tokens is None and HeldOut().max_new_tokens is None
    assert ExpertIterRunConfig(run_dir="r", task={"name": "arithmetic"}).expert_iter.max_new_tokens is None
