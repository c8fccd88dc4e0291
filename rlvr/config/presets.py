"""Algorithm presets (docs/design.md, "Presets"): what `algorithm.preset=NAME` sets, and each preset's update
schedule. Values a recipe or an override sets win over the preset's."""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "reinforce": {"advantage": "reinforce", "loss": {"name": "pg"}, "aggregation": "seq_mean_token_sum_norm"},
    "grpo": {
        "advantage": "grpo",
        "loss": {"name": "ppo_clip", "clip_low": 0.2, "clip_high": 0.2},
        "aggregation": "seq_mean_token_mean",
        "kl": {"estimator": "k3", "placement": "loss"},
    },
    "dr_grpo": {
        "advantage": "dr_grpo",
        "loss": {"name": "ppo_clip", "clip_low": 0.2, "clip_high": 0.2},
        "aggregation": "seq_mean_token_sum_norm",
    },
    "dapo": {
        "advantage": "grpo",
        "loss": {"name": "ppo_clip", "clip_low": 0.2, "clip_high": 0.28},
        "aggregation": "token_mean",
        "dynamic_sampling": {"enabled": True},
        "overlong": {"enabled": True},
        "kl": {"coef": 0.0},
    },
    "gspo": {"advantage": "grpo", "loss": {"name": "gspo"}, "aggregation": "seq_mean_token_mean"},
    "cispo": {"advantage": "grpo", "loss": {"name": "cispo"}, "aggregation": "token_mean"},
    "rloo": {
        "advantage": "rloo",
        "loss": {"name": "pg"},
        "aggregation": "seq_mean_token_sum_norm",
        "kl": {"estimator": "k1", "placement": "reward"},
    },
    "remax": {"advantage": "remax", "loss": {"name": "pg"}, "aggregation": "seq_mean_token_sum_norm"},
    "reinforce_pp": {
        "advantage": "reinforce_pp",
        "loss": {"name": "ppo_clip"},
        "aggregation": "token_mean",
        "kl": {"estimator": "k1", "placement": "reward"},
    },
    "ppo": {
        # GAE's lambda 0.95: TRL's PPOTrainer and OpenRLHF (gamma 1, as both use for LLMs)
        "advantage": {"name": "gae", "lam": 0.95},
        "loss": {"name": "ppo_clip"},
        "aggregation": "token_mean",
        "critic": {"enabled": True},
        "kl": {"estimator": "k1", "placement": "reward"},
    },
    "minirl": {
        "advantage": "grpo",
        "loss": {"name": "ppo_clip"},
        "aggregation": "token_mean",
        "is_correction": {"enabled": True, "level": "token", "mode": "truncate"},
    },
}
"""Each preset's settings; values not named keep the field defaults (which follow the papers).

reinforce, rloo and remax differentiate log pi(y|x) = sum_t log pi_t, a per-sequence token *sum*
(Williams 1992; Ahmadian et al. 2024; Li et al. 2023; TRL's RLOOTrainer): `seq_mean_token_sum_norm`
divides that sum by the constant rollout.max_new_tokens (not by |y|, which would be the length bias
Dr. GRPO describes), only to keep the learning-rate scale of the token-mean presets."""

PRESET_SCHEDULES: dict[str, dict[str, Any]] = {
    # GSPO (Zheng et al. 2025, sec. 5.1): "we partition each batch of rollout data into four
    # minibatches for gradient updates".
    "gspo": {"mini_batches": 4},
    # CISPO (MiniMax-M1, sec. 3.1) is built for off-policy updates; the paper's count is not stated
    # where we could check it, so rlvr uses GSPO's four.
    "cispo": {"mini_batches": 4},
    # DAPO's recipe: 512 prompts per rollout batch in mini-batches of 32 prompts, 16 updates per batch.
    "dapo": {"mini_batches": 16},
    # MiniRL ("Stabilizing RL with LLMs", arXiv:2512.01374) studies N mini-batches per rollout batch;
    # rlvr's default is N = 4, so that the IS correction and the clip act.
    "minirl": {"mini_batches": 4},
    # PPO for LLMs (TRL's PPOTrainer defaults; Ouyang et al. 2022): 4 epochs over each rollout batch.
    "ppo": {"epochs": 4},
}
"""Each preset's update schedule (train.epochs x train.mini_batches), under any the recipe sets. With
fewer prompt groups than mini-batches (a small batch, or dynamic sampling short of groups), each
mini-batch holds one group."""
