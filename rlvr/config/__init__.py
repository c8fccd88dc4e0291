"""The configuration of a run: a YAML recipe and dotted overrides, resolved into a validated `RunConfig`.

A recipe is YAML mapping onto `RunConfig`. `algorithm.preset` names a combination from docs/design.md
section 4; any key the recipe or a `key.sub=value` override sets wins over the preset. Unknown keys are
rejected with the nearest valid name, and combinations that make no sense are rejected before a model
is loaded, with the reason. By idea:

- `schema`: the pydantic models (a loss's section comes from its signature in rlvr.core.losses);
- `commands`: the configs of `rlvr sft`, `rlvr expert-iter` and `rlvr eval`, built from the same sections;
- `presets`: what each algorithm preset sets, and its update schedule;
- `budgets`: each task's response budget, the default max_new_tokens;
- `validation`: the cross-field checks;
- `loading`: recipes, overrides, presets applied, readable errors.

The package imports only rlvr.core. What the config alone cannot tell (does the task exist, does the user's
reward load, is the engine or tracker installed) is rlvr.train.preflight's, which every command runs next.
"""

from rlvr.config.loading import RECIPES_DIR, deep_merge, load_recipe, parse_overrides, resolve, resolve_as, to_yaml
from rlvr.config.presets import PRESET_SCHEDULES, PRESETS
from rlvr.config.schema import (
    GROUP_ESTIMATORS,
    LOSS_CONFIGS,
    AlgorithmConfig,
    CheckpointConfig,
    ConfigError,
    EvalConfig,
    LoggingConfig,
    ModelConfig,
    OptimConfig,
    RewardTerm,
    RolloutConfig,
    RunConfig,
    TaskConfig,
    TrainConfig,
)
from rlvr.config.validation import check_combinations, reward_term_name

__all__ = [
    "GROUP_ESTIMATORS",
    "LOSS_CONFIGS",
    "PRESETS",
    "PRESET_SCHEDULES",
    "RECIPES_DIR",
    "AlgorithmConfig",
    "CheckpointConfig",
    "ConfigError",
    "EvalConfig",
    "LoggingConfig",
    "ModelConfig",
    "OptimConfig",
    "RewardTerm",
    "RolloutConfig",
    "RunConfig",
    "TaskConfig",
    "TrainConfig",
    "check_combinations",
    "deep_merge",
    "load_recipe",
    "parse_overrides",
    "reward_term_name",
    "resolve",
    "resolve_as",
    "to_yaml",
]
