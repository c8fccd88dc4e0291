"""The sections of `rlvr sft` and `rlvr expert-iter`: pydantic like train's, with their keys, defaults and errors."""

from __future__ import annotations

import pydantic
import pytest

from rlvr.config import ConfigError, resolve_as
from rlvr.config.commands import ExpertIterConfig, ExpertIterRunConfig, SFTConfig, SFTRunConfig

SFT = {"run_dir": "r", "data": {"path": "x.jsonl"}}
EXPERT_ITER = {"run_dir": "r", "task": {"name": "symbol"}}


def test_keys_and_defaults():
    assert SFTConfig().model_dump() == {"epochs": 1, "lr": 1e-5, "batch_size": 8, "micro_batch_size": None,
                                        "aggregation": "token_mean", "max_len": 512, "weight_decay": 0.0,
                                        "max_grad_norm": 1.0, "seed": 0}
    assert ExpertIterConfig().model_dump() == {"rounds": 3, "prompts": 64, "k": 4, "temperature": 1.0, "top_p": 1.0,
                                               "max_new_tokens": None, "max_per_prompt": None, "keep_truncated": False,
                                               "restart_from_base": False, "eval_size": 200, "seed": 0,
                                               "sft": SFTConfig().model_dump()}


@pytest.mark.parametrize(("overrides", "message"), [
    (["sft.epochs=0"], "invalid config: sft: invalid SFT settings: epochs must be an integer >= 1 (got 0)"),
    (["sft.lr=0"], "invalid config: sft: invalid SFT settings: lr must be > 0 (got 0.0)"),
    (["sft.micro_batch_size=0"], "micro_batch_size must be an integer >= 1 or None (got 0)"),
    (["sft.max_grad_norm=-1"], "max_grad_norm must be > 0 or None (got -1.0)"),
    (["sft.weight_decay=-1"], "weight_decay must be >= 0 (got -1.0)"),
    (["sft.aggregation=sum"], "unknown aggregation 'sum'; known: token_mean, seq_mean_token_mean"),
    (["sft.max_len=0", "sft.batch_size=0"], "batch_size must be an integer >= 1 (got 0); max_len must be an integer "
                                            ">= 1 (got 0)"),
    (["sft.epochs=abc"], "invalid config: sft.epochs: Input should be a valid integer"),
    (["sft.lrr=1"], "unknown config key 'sft.lrr'; did you mean 'sft.lr'? (valid here: epochs, lr, batch_size"),
])
def test_sft_errors_name_the_setting(overrides, message):
    with pytest.raises(ConfigError) as err:
        resolve_as(SFTRunConfig, SFT, overrides)
    assert message in str(err.value)


@pytest.mark.parametrize(("overrides", "message"), [
    (["expert_iter.k=0"], "invalid config: expert_iter: invalid expert-iteration settings: k must be an integer >= 1"),
    (["expert_iter.rounds=-1"], "rounds must be an integer >= 0 (got -1)"),
    (["expert_iter.temperature=0"], "temperature must be > 0: expert iteration needs varied samples (got 0.0)"),
    (["expert_iter.top_p=2"], "top_p must be in (0, 1] (got 2.0)"),
    (["expert_iter.max_per_prompt=0"], "max_per_prompt must be an integer >= 1 or None (got 0)"),
    (["expert_iter.max_new_tokens=0"], "max_new_tokens must be an integer >= 1 (got 0)"),
    (["expert_iter.eval_size=0"], "eval_size must be an integer >= 1 (got 0)"),
    (["expert_iter.sft.epochs=0"], "invalid config: expert_iter.sft: invalid SFT settings: epochs must be"),
    (["expert_iter.kk=1"], "unknown config key 'expert_iter.kk'; did you mean 'expert_iter.k'?"),
    (["expert_iter.sft.lrr=1"], "unknown config key 'expert_iter.sft.lrr'; did you mean 'expert_iter.sft.lr'?"),
])
def test_expert_iter_errors_name_the_setting(overrides, message):
    with pytest.raises(ConfigError) as err:
        resolve_as(ExpertIterRunConfig, EXPERT_ITER, overrides)
    assert message in str(err.value)


def test_in_python_unknown_keys_and_bad_values_are_refused_when_set():
    with pytest.raises(pydantic.ValidationError, match="Extra inputs are not permitted"):
        SFTConfig(lrr=1.0)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        SFTConfig(batch_size=0)
    config = ExpertIterConfig()
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        config.k = 0
    # the sections are what the loops take: rlvr.train.sft and rlvr.train.expert_iter name the same classes
    from rlvr.train.expert_iter import ExpertIterConfig as LoopConfig
    from rlvr.train.sft import SFTConfig as SFTLoopConfig

    assert LoopConfig is ExpertIterConfig and SFTLoopConfig is SFTConfig


def test_the_run_configs_keep_the_section_values():
    cfg = resolve_as(ExpertIterRunConfig, EXPERT_ITER, ["seed=3", "expert_iter.k=8", "expert_iter.sft.lr=5e-5"])
    assert (cfg.expert_iter.k, cfg.expert_iter.sft.lr, cfg.seed) == (8, 5e-5, 3)
    assert resolve_as(SFTRunConfig, SFT, ["sft.seed=3"]).sft.seed == 3  # accepted; the command sets it from `seed`
