"""The variance of the policy-gradient estimate, measured: the quantity the baseline literature is about.

For a fixed policy and a fixed set of prompts, draw R independent rollout batches (independent
sampling seeds, the same prompts). On each batch b, every estimator e turns the same samples into
advantages and the same policy-gradient loss into a gradient g_b (all parameters, flattened; e is left
out of the notation below). With mu = E g and Sigma = Cov g, per estimator:

    total variance   T = (1/(R-1)) sum_b ||g_b - gbar||^2             unbiased for tr Sigma
    signal           D = (1/(R(R-1))) sum_{a != b} <g_a, g_b>         unbiased for ||mu||^2
                       = ||gbar||^2 - T/R
    relative var.    T / D                                           estimates tr Sigma / ||mu||^2
    LOO cosine       cos(g_b, mean of the other R-1 batches), averaged over b

The relative variance is the noise-to-signal ratio, scale-free, so comparable across estimators whose
advantages have different scales (GRPO's 1/std). Its denominator is not ||gbar||^2: that one carries the
noise of the mean, E ||gbar||^2 = ||mu||^2 + tr Sigma / R, so T / ||gbar||^2 tends to
rho / (1 + rho/R) for a true ratio rho, which is capped near R. D removes that term. When
D <= 0 the R batches do not resolve the mean gradient from the noise (rho is of the order of R or
more): the ratio is reported as unresolved (None and `unresolved: true`), not as a number. T / D is a
ratio whose denominator can come near 0, so its mean is dominated by rare huge values once rho is
near R. Where D is well above its noise (rho well below R) its mean is right to a few %. Near R what
it gets right is its median (counting unresolved as +inf), to a few % when the noise is spread over
many directions (rho = 18, R = 8, effective rank 50: 3% high); with the noise in a few directions the
median too reads high (effective rank 6: 35% high, a quarter of the measurements unresolved), and
the interval below is the number to read (tests/compare/test_grad_variance.py).

The cosine leaves g_b out of the mean it is compared with: the full mean contains g_b, which inflates
the cosine (at rho = 18 and R = 8, 0.41 where independent batches agree by 0.12). The LOO cosine is an
unbiased estimate of E cos(g, m), the cosine between one batch gradient and the mean m of R-1 other,
independent batch gradients. That target depends on R (a mean of more batches is less noisy): in
high dimension it is about 1 / sqrt((1 + rho)(1 + rho/(R-1))), so compare LOO cosines at one R only.
The per-batch cosines share their batches, so a t-interval over them does not cover; none is given.

Intervals (95%) come from the jackknife over batches. T and D are U-statistics of order 2 (kernels
||g_a - g_b||^2 / 2 and <g_a, g_b>), and every leave-one-out value T_(-b), D_(-b) is a function of three
numbers per batch: ||g_b||^2, <g_b, sum_a g_a> and ||sum_a g_a||^2. So the jackknife needs two passes
over the batches and memory for two gradient vectors, where the pairwise form of the same U-statistics
would need all R^2 inner products <g_a, g_b> (R passes of R gradients, or every gradient in memory).
The jackknife variance of a U-statistic errs on the large side (the Efron-Stein inequality), which is
what the plain t-interval over the R per-batch terms R/(R-1) ||g_b - gbar||^2 lacks: those terms
share gbar, and that interval covers tr Sigma 0.90-0.94 of the time at R = 8.
- tr Sigma: exp(log T +- t(0.975, R-1) se), se the jackknife standard error of log T. T is a
  positive, right-skewed quadratic form; on the log scale its sampling law is near symmetric, so the
  interval is asymmetric the way a chi-square's is.
- the ratio: Fieller's interval, the set of rho for which T - rho D (a U-statistic with mean 0 at the
  true rho) passes a two-sided jackknife t-test, built from the jackknife variances and covariance of
  T and D. It is bounded when D is resolved and [low, +inf) (high None) when D's interval reaches 0:
  the batches then bound the noise-to-signal ratio from below only.
Coverage by simulation (Gaussian gradients of known mean and covariance, R = 8, effective ranks 6 to
500, rho from 0.1 to 18): 0.93-0.96 for tr Sigma, 0.93-0.99 for the ratio.

Memory stays at a few gradient vectors: a first pass accumulates sum g and the ||g_b||^2, a second
pass (the same stored rollouts, gradients recomputed) the <g_b, sum g>.

The loss is fixed across estimators (the `pg` surrogate, on-policy, with one aggregation for all), so
only the advantage differs. Using the same batches for every estimator makes the comparison paired.
`gae` needs the run's critic and is skipped without one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rlvr.core.advantages import ADVANTAGE_ESTIMATORS, compute_advantages, outcome_to_token_rewards
from rlvr.core.objective import rl_objective
from rlvr.eval.variance import variance_statistics
from rlvr.models.logprobs import response_logprobs
from rlvr.train.batch import TrainBatch
from rlvr.train.seeds import GRAD_VARIANCE, derive_seed


def gradient_variance(trainer, examples: list[Any], estimators: list[str] | dict[str, dict[str, Any]], *,
                      batches: int = 8, seed: int = 0,
                      aggregation: str = "seq_mean_token_sum_norm") -> dict[str, dict[str, Any]]:
    """Per estimator: the noise, signal and noise-to-signal ratio of its policy gradient and the leave-one-out
    cosines (module docstring; the record of `variance_statistics`).

    `estimators`: names (each with its default options), or name -> its options (`compute_advantages`)."""
    options = dict(estimators) if isinstance(estimators, dict) else {e: {} for e in estimators}
    if batches < 2:
        raise ValueError(f"batches must be >= 2 to estimate a variance, got {batches}")
    params = [p for p in trainer.models.policy.parameters() if p.requires_grad]
    usable = [e for e in options if "values" not in ADVANTAGE_ESTIMATORS.needs(e) or trainer.models.critic is not None]
    greedy = any("baseline_rewards" in ADVANTAGE_ESTIMATORS.needs(e) for e in usable)
    rollouts = []
    for b in range(batches):
        scored = trainer.collector.generate(examples, derive_seed(seed, GRAD_VARIANCE, b))
        baseline = trainer.greedy_baseline(scored, b) if greedy else None
        rollouts.append((scored, baseline))

    def gradient(b: int, e: str) -> torch.Tensor:
        scored, baseline = rollouts[b]
        return _gradient(trainer, params, scored, baseline, e, options[e], aggregation)

    out = variance_statistics(usable, batches, gradient)
    trainer.models.policy.zero_grad(set_to_none=True)
    return out


def _gradient(trainer, params, scored, baseline, estimator: str, options: dict[str, Any],
              aggregation: str) -> torch.Tensor:
    """The flattened policy gradient of the `pg` loss with `estimator`'s advantages on one batch."""
    cfg = trainer.cfg
    device = params[0].device
    b = TrainBatch.from_rollout(scored, trainer.models.pad_id, device)
    rewards = scored.reward_tensor().to(device)
    group_ids = torch.tensor(scored.prompt_index, device=device)
    values = trainer.forwards.values(trainer.models.critic, b) if "values" in ADVANTAGE_ESTIMATORS.needs(estimator) else None
    adv, _ = compute_advantages(
        estimator, rewards=rewards, loss_mask=b.loss_mask, group_ids=group_ids, values=values,
        baseline_rewards=None if baseline is None else baseline.to(device),
        token_rewards=outcome_to_token_rewards(rewards, b.loss_mask), **options,
    )
    trainer.models.policy.zero_grad(set_to_none=True)
    num_tokens, num_sequences = b.loss_mask.sum(), b.loss_mask.any(-1).sum()
    for mb in b.micro_batches(range(b.loss_mask.shape[0]), cfg.train.micro_batch_size):
        lp, _ = response_logprobs(trainer.models.policy, mb.input_ids, mb.attention_mask, mb.t, packed=trainer.forwards.packed,
                                  **trainer.forwards.filter())
        loss, _ = rl_objective(lp, loss_mask=mb.loss_mask, advantages=adv[mb.rows, : mb.t], loss="pg",
                               aggregation=aggregation, num_tokens=num_tokens, num_sequences=num_sequences,
                               constant=cfg.rollout.max_new_tokens)
        loss.backward()
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]).detach()


def study_grad_variance(study, cfg, configs: dict, estimators: dict[str, dict[str, Any]], batches: int,
                        checkpoint: str | None) -> Path:
    """`rlvr compare --grad-variance`: grad_variance.json in the study directory, each variant's estimator
    (`estimators`: name -> options; `configs`: label -> RunConfig) on the policy and prompts of `cfg`, the first
    variant's (the initial model, or `checkpoint`)."""
    import json

    from rlvr.train.build import build

    aggregation = cfg.algorithm.aggregation
    critic_state, note = trained_critic(configs, checkpoint)
    if critic_state is not None:  # build with the critic variant's settings, so that the trainer has a critic
        cfg = next(c for c in configs.values() if c.algorithm.critic.enabled)
    trainer = build(cfg, model_path=checkpoint)
    if critic_state is not None:
        trainer.topo.load_module_state(trainer.models.critic, critic_state)
    examples = trainer.models.task.examples("train")[: cfg.rollout.prompts_per_step]
    result = gradient_variance(trainer, examples, estimators, batches=batches, seed=cfg.seed,
                               aggregation=aggregation)
    study.out.mkdir(parents=True, exist_ok=True)
    # one file per policy: the initial model, or a checkpoint (its step directory's name)
    tag = "" if checkpoint is None else "_" + Path(checkpoint).resolve().parent.name.replace("/", "_")
    path = study.out / f"grad_variance{tag}.json"
    record = {"policy": checkpoint or cfg.model.name, "prompts": len(examples), "aggregation": aggregation,
              "estimators": result}
    if note:
        record["critic"] = note
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def trained_critic(configs: dict, checkpoint: str | None):
    """(the critic's weights from `checkpoint`'s trainer state, a note for the report) when a variant uses gae:
    the learned-critic baseline needs a critic trained alongside the policy measured; without one gae is left
    out (an untrained value head is no baseline)."""
    if not any("values" in ADVANTAGE_ESTIMATORS.needs(c.algorithm.advantage.name) for c in configs.values()):
        return None, None
    if checkpoint is None:
        return None, "gae left out: the initial policy has no trained critic (measure a critic run's checkpoint)"
    from rlvr.train.checkpoint import load_trainer_state

    step_dir = Path(checkpoint).parent
    state = load_trainer_state(step_dir) if (step_dir / "trainer.pt").exists() else {}
    if "critic" not in state:
        return None, f"gae left out: {step_dir} holds no critic (give the checkpoint of a run with a critic)"
    return state["critic"], f"gae uses the critic trained with this policy ({step_dir})"
