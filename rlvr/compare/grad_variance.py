"""The variance of the policy-gradient estimate, measured: the quantity the baseline literature is about.

For a fixed policy and a fixed set of prompts, draw R independent rollout batches (independent
sampling seeds, the same prompts). On each batch b, every estimator e turns the same samples into
advantages and the same policy-gradient loss into a gradient g_{e,b} (all parameters, flattened). Then,
per estimator:

    mean gradient     g_e   = (1/R) sum_b g_{e,b}
    total variance    tr Cov = (1/(R-1)) sum_b ||g_{e,b} - g_e||^2      (the trace of the covariance)
    cosine            cos_b = <g_{e,b}, g_e> / (||g_{e,b}|| ||g_e||)     (agreement with the mean)
    relative variance tr Cov / ||g_e||^2                                (noise to signal; scale-free)

with 95% t-intervals over the R batches (for the trace, over its R per-batch terms
R/(R-1) ||g_{e,b} - g_e||^2, whose mean it is). Using the same batches for every estimator makes the
comparison paired. Memory stays at a few gradient vectors: a first pass accumulates sum g and
sum ||g||^2, a second pass (the same stored rollouts, gradients recomputed) the cosines.

The loss is fixed across estimators (the `pg` surrogate, on-policy, with one aggregation for all), so
only the advantage differs. `gae` needs the run's critic and is skipped without one.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from rlvr.compare.report import mean_interval
from rlvr.core.advantages import compute_advantages, outcome_to_token_rewards
from rlvr.core.objective import rl_objective
from rlvr.models.logprobs import response_logprobs
from rlvr.train.batch import TrainBatch
from rlvr.train.seeds import GRAD_VARIANCE, derive_seed


def gradient_variance(trainer, examples: list[Any], estimators: list[str] | dict[str, dict[str, Any]], *,
                      batches: int = 8, seed: int = 0,
                      aggregation: str = "seq_mean_token_sum_norm") -> dict[str, dict[str, Any]]:
    """Per estimator: trace of the gradient covariance and cosines to the mean gradient (module docstring).

    `estimators`: names (each with its default options), or name -> its options (`compute_advantages`)."""
    options = dict(estimators) if isinstance(estimators, dict) else {e: {} for e in estimators}
    if batches < 2:
        raise ValueError(f"batches must be >= 2 to estimate a variance, got {batches}")
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    usable = [e for e in options if e != "gae" or trainer.critic is not None]
    rollouts = []
    for b in range(batches):
        scored = trainer.generate_shared(examples, derive_seed(seed, GRAD_VARIANCE, b))
        baseline = trainer.greedy_baseline(scored, b) if "remax" in usable else None
        rollouts.append((scored, baseline))

    def gradient(b: int, e: str) -> torch.Tensor:
        scored, baseline = rollouts[b]
        return _gradient(trainer, params, scored, baseline, e, options[e], aggregation)

    out = variance_statistics(usable, batches, gradient)
    trainer.model.zero_grad(set_to_none=True)
    return out


def variance_statistics(estimators: list[str], batches: int, gradient) -> dict[str, dict[str, Any]]:
    """The statistics of the module docstring from `gradient(b, e)`, estimator e's flattened gradient on
    rollout batch b (each called twice, so memory stays at a few gradient vectors whatever the model)."""
    if batches < 2:
        raise ValueError(f"batches must be >= 2 to estimate a variance, got {batches}")
    out: dict[str, dict[str, Any]] = {}
    for e in estimators:
        total, squares = None, []
        for b in range(batches):
            g = gradient(b, e).double()
            total = g if total is None else total + g
            squares.append(float(g.pow(2).sum()))
        mean = total / batches
        mean_sq = float(mean.pow(2).sum())
        # ||g_b - mean||^2 = ||g_b||^2 - 2 <g_b, mean> + ||mean||^2; the <g_b, mean> come from pass two.
        dots, cosines = [], []
        for b in range(batches):
            g = gradient(b, e).double()
            dot = float((g * mean).sum())
            dots.append(dot)
            norm = math.sqrt(max(float(g.pow(2).sum()), 0.0))
            cosine = dot / (norm * math.sqrt(mean_sq)) if norm > 0 and mean_sq > 0 else math.nan
            cosines.append(min(1.0, max(-1.0, cosine)) if cosine == cosine else cosine)  # rounding can pass 1
        terms = [batches / (batches - 1) * (sq - 2 * d + mean_sq) for sq, d in zip(squares, dots)]
        trace = mean_interval(terms)
        out[e] = {
            "trace_cov": trace,
            "cosine_to_mean": mean_interval(cosines),
            "mean_grad_norm": math.sqrt(mean_sq),
            # tr Cov / ||mean||^2: the noise-to-signal ratio, comparable across estimators whose
            # advantages have different scales (GRPO's 1/std, for one)
            "relative_variance": trace["mean"] / mean_sq if mean_sq > 0 else math.nan,
            "batches": batches,
        }
    return out


def _gradient(trainer, params, scored, baseline, estimator: str, options: dict[str, Any],
              aggregation: str) -> torch.Tensor:
    """The flattened policy gradient of the `pg` loss with `estimator`'s advantages on one batch."""
    cfg = trainer.cfg
    device = params[0].device
    b = TrainBatch.from_rollout(scored.rollout, trainer.pad_id, device)
    rewards = scored.rewards.to(device)
    group_ids = torch.tensor(scored.rollout.prompt_index, device=device)
    values = trainer._values_no_grad(b) if estimator == "gae" else None
    adv, _ = compute_advantages(
        estimator, rewards=rewards, loss_mask=b.loss_mask, group_ids=group_ids, values=values,
        baseline_rewards=None if baseline is None else baseline.to(device),
        token_rewards=outcome_to_token_rewards(rewards, b.loss_mask), **options,
    )
    trainer.model.zero_grad(set_to_none=True)
    num_tokens, num_sequences = b.loss_mask.sum(), b.loss_mask.any(-1).sum()
    for mb in b.micro_batches(range(b.loss_mask.shape[0]), cfg.train.micro_batch_size):
        lp, _ = response_logprobs(trainer.model, mb.input_ids, mb.attention_mask, mb.t, packed=trainer.packed,
                                  **trainer._filter())
        loss, _ = rl_objective(lp, loss_mask=mb.loss_mask, advantages=adv[mb.rows, : mb.t], loss="pg",
                               aggregation=aggregation, num_tokens=num_tokens, num_sequences=num_sequences,
                               constant=cfg.rollout.max_new_tokens)
        loss.backward()
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]).detach()
