"""Which passes one RL step runs: a pure function of the recipe and the trainer's state, returning a frozen plan.

The step's no-grad passes (old policy, reference, critic, ReMax's greedy rollout) and where its IS weights
come from all follow from the algorithm's settings, the estimator's and the loss's declared needs
(rlvr.core.registry), and three facts of the moment: whether the samples were drawn with the trainer's
current weights, whether a reference model with a positive KL coefficient is loaded, and whether the
routes of a mixture-of-experts model are replayed.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlvr.core.advantages import ADVANTAGE_ESTIMATORS
from rlvr.core.losses import POLICY_LOSSES


@dataclass(frozen=True)
class StepPlan:
    """What one step computes before and during its optimizer steps."""

    old_logprobs: bool
    """A no-grad pi_old pass before the update. Not needed on an exactly on-policy update (one epoch, one
    mini-batch, samples of the current weights, no KL in the reward, no layer policy, no smoothing): the first
    forward of the update gives the same numbers, and the ratio is taken against its detached value."""
    deferred_is: bool
    """IS weights pi_old / pi_sampler from each micro-batch's own forward (detached, before its backward)."""
    is_weights: bool
    """Batch-wide IS weights from the pi_old pass."""
    reference: bool
    """Reference log-probs (a KL term with a positive coefficient)."""
    kl_in_reward: bool
    """The KL penalty goes into the reward (algorithm.kl.placement=reward), else into the loss."""
    values: bool
    """A critic pass (the estimator reads values: GAE)."""
    baseline_rollout: bool
    """A greedy rollout whose return is each prompt's baseline (the estimator reads baseline_rewards: ReMax)."""
    covariance_selection: bool
    """The loss picks tokens by covariance over each mini-batch (Clip-Cov, KL-Cov)."""
    layer: int | None
    """The decoder layer whose internal policy the objective uses this step (Bottom-up Policy Optimization)."""


def layer_policy_layer(layer_policy, step: int) -> int | None:
    """The layer of algorithm.layer_policy's phase at `step` (steps 1..S), None after it or without one."""
    if layer_policy is None:
        return None
    return layer_policy.layer if step <= layer_policy.steps else None


def plan_step(cfg, step: int, *, stale: bool, reference: bool, replays_routes: bool,
              defer_is_weights: bool = True) -> StepPlan:
    """The plan of step `step` of `cfg` (a RunConfig).

    stale: the samples were drawn with other weights than the trainer's current ones. reference: a reference
    model is loaded and the KL coefficient is positive now. replays_routes: routing replay r2 / r3 (the update
    forwards need the old forward's routes, so pi_old has its own pass). defer_is_weights=False always gives
    the IS weights their own pass (the tests compare the two).
    """
    alg, t = cfg.algorithm, cfg.train
    layer = layer_policy_layer(alg.layer_policy, step)
    off_policy = t.epochs > 1 or t.mini_batches > 1
    kl_in_reward = reference and alg.kl.placement == "reward"
    recompute = off_policy or kl_in_reward or stale or layer is not None or alg.differential_smoothing is not None
    correct = alg.is_correction.enabled
    deferred_is = correct and not recompute and defer_is_weights and not replays_routes
    return StepPlan(
        old_logprobs=recompute or (correct and not deferred_is),
        deferred_is=deferred_is,
        # pi_K against the full model's sampler is no training-inference mismatch: no IS weights in that phase
        is_weights=correct and layer is None and not deferred_is,
        reference=reference,
        kl_in_reward=kl_in_reward,
        values="values" in ADVANTAGE_ESTIMATORS.needs(alg.advantage.name),
        baseline_rollout="baseline_rewards" in ADVANTAGE_ESTIMATORS.needs(alg.advantage.name),
        covariance_selection="covariance_selection" in POLICY_LOSSES.needs(alg.loss.name),
        layer=layer,
    )
