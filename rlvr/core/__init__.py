"""rlvr's exact algorithm core: pure tensor functions, each documented with its formula and paper.

Four independent choices, each a registry (docs/design.md, "The core"): `ADVANTAGE_ESTIMATORS`,
`POLICY_LOSSES`, `AGGREGATIONS`, `KL_ESTIMATORS`; plus corrections and shaping as plain functions.
Tensor conventions: response tensors are [N, T]; `loss_mask` is True where a token counts.
"""

from rlvr.core.advantages import ADVANTAGE_ESTIMATORS, compute_advantages, outcome_to_token_rewards
from rlvr.core.aggregation import AGGREGATIONS, aggregate, batch_counts
from rlvr.core.entropy import entropy_from_logits
from rlvr.core.importance import importance_weights
from rlvr.core.kl import KL_ESTIMATORS, adaptive_kl_coef, kl_divergence
from rlvr.core.losses import POLICY_LOSSES, policy_loss, sft_loss, value_loss
from rlvr.core.masked import masked_mean, masked_sum, masked_var, masked_whiten
from rlvr.core.passk import pass_at_k
from rlvr.core.registry import Registry
from rlvr.core.shaping import differential_smoothing, filter_groups, overlong_penalty

__all__ = [
    "ADVANTAGE_ESTIMATORS", "AGGREGATIONS", "KL_ESTIMATORS", "POLICY_LOSSES", "Registry",
    "adaptive_kl_coef", "aggregate", "batch_counts", "compute_advantages", "differential_smoothing",
    "entropy_from_logits",
    "filter_groups", "importance_weights", "kl_divergence", "masked_mean", "masked_sum", "masked_var",
    "masked_whiten", "outcome_to_token_rewards", "overlong_penalty", "pass_at_k", "policy_loss",
    "sft_loss", "value_loss",
]
