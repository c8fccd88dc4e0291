"""The metrics of one RL step: the rollouts' (rewards, lengths, behaviour), and the update's (losses, clip
fractions, training-inference mismatch, IS weights, KL), summed over micro-batches and ranks."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rlvr.core.masked import masked_mean, masked_sum
from rlvr.eval.behaviour import REFLECTION_PHRASES, behaviour_metrics
from rlvr.rollout.base import RolloutBatch
from rlvr.train.batch import MetricSums
from rlvr.train.plan import StepPlan
from rlvr.train.prepare import Prepared


def rollout_metrics(batch: RolloutBatch, cfg, tokenizer) -> dict[str, float]:
    """Every generated sample's figures: reward, accuracy, lengths, truncation, reward components, behaviour."""
    rewards = batch.reward_tensor()
    lengths = torch.tensor(batch.response_lengths, dtype=torch.float32)
    out = {
        "reward_mean": float(rewards.mean()),
        "reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0,
        "accuracy": float(batch.correct_tensor().float().mean()),
        "response_len_mean": float(lengths.mean()),
        "response_len_max": float(lengths.max()),
        "truncated_frac": sum(f == "length" for f in batch.finish_reasons) / len(batch.finish_reasons),
    }
    for name, values in batch.component_tensors().items():
        out[f"reward_{name}"] = float(values.mean())
    phrases = cfg.reflection_phrases if cfg.reflection_phrases is not None else REFLECTION_PHRASES
    out.update(behaviour_metrics(
        batch.texts, lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]), phrases))
    return out


def merged(acc: MetricSums, topo) -> MetricSums:
    """The ranks' metric sums and weights, added (the same keys everywhere afterwards)."""
    if not topo.distributed:
        return acc
    out = MetricSums()
    for sums, weights, maxima in topo.all_gather_objects((acc.sums, acc.weights, acc.maxima)):
        for k, v in sums.items():
            out.sums[k] = out.sums.get(k, 0.0) + v
            out.weights[k] = out.weights.get(k, 0.0) + weights[k]
        for k, v in maxima.items():
            out.add_max(k, v)
    return out


def mismatch_stats(parts: list[Tensor], topo) -> dict[str, float]:
    """The training-inference mismatch of this step's tokens: max and quantiles of |sampler - trainer| log-prob
    (the mean is `logprob_mismatch`), over every rank's tokens."""
    parts = [t.float().cpu() for t in parts]
    if topo.distributed:
        parts = [t for ranked in topo.all_gather_objects(parts) for t in ranked]
    values = torch.cat(parts) if parts else torch.zeros(0)
    if values.numel() == 0:
        return {}
    q = torch.quantile(values[:16_000_000], torch.tensor([0.5, 0.9, 0.99]))
    return {"logprob_mismatch_max": float(values.max()), "logprob_mismatch_p50": float(q[0]),
            "logprob_mismatch_p90": float(q[1]), "logprob_mismatch_p99": float(q[2])}


def update_metrics(p: Prepared, plan: StepPlan, means: dict[str, float], first_forward_mismatch: list[Tensor],
                   topo, phase: dict[str, float]) -> dict[str, Any]:
    """The update's metrics from its summed means (routing's already finished) and its prepared batch, before the
    KL controller and the push; `phase`: the layer-policy flag."""
    b, full_mask = p.batch, p.full_mask
    layer_phase = plan.layer is not None
    out = dict(means)
    is_metrics = dict(p.is_metrics)
    moments = out.pop("_is_ratio", None), out.pop("_is_ratio_sq", None)
    if None not in moments and not layer_phase:
        # population std of the raw ratio over every token, from its first two moments (float64 sums)
        is_metrics["is_ratio_std"] = torch.tensor(max(moments[1] - moments[0] ** 2, 0.0) ** 0.5)
    out["kept_groups"] = float(len(set(p.rollouts.prompt_index)))
    out.update(phase)
    mismatch = first_forward_mismatch
    # In the layer-policy phase the sampler/trainer mismatch metrics would compare pi_K with the full model.
    if b.old_logprobs is not None and not layer_phase:
        diff = b.old_logprobs - b.sampler_logprobs
        if "logprob_mismatch" not in is_metrics:
            is_metrics["logprob_mismatch"] = masked_mean(diff.abs(), full_mask)
        if full_mask.any():
            # the spread of the raw training-inference ratio pi_old / pi_sampler over tokens (before any IS
            # truncation): how far the sampler's distribution is from the trainer's, whether or not IS corrects it
            ratio = torch.exp(diff.double())[full_mask]
            is_metrics["is_ratio_std"] = ratio.std(unbiased=False) if ratio.numel() > 1 else ratio.new_zeros(())
        own = sorted(b.own) if topo.distributed else slice(None)
        mismatch = [(b.old_logprobs[own] - b.sampler_logprobs[own]).abs()[full_mask[own]]]
    out.update({k: float(v) for k, v in is_metrics.items()})
    out.update(mismatch_stats(mismatch, topo))
    out.update(kl_metrics(p, out))
    out.setdefault("is_weight_mean", 1.0)
    out["advantage_mean"] = float(masked_mean(b.advantages, b.loss_mask))
    out["sampled_policy_version"] = float(p.rollouts.policy_version)
    return out


def kl_metrics(p: Prepared, out: dict[str, Any]) -> dict[str, Any]:
    """"kl": the policy's KL from the reference as the algorithm estimates it (null without a reference model);
    "kl_seq_k1": KL(pi || pi_ref) of whole responses, estimated by k1 summed over each response (unbiased on the
    policy that sampled them): one measure of the distance to the reference for every placement."""
    b, full_mask = p.batch, p.full_mask
    kl: dict[str, Any] = {"kl": None}
    if p.reward_kl is not None:
        kl["kl"] = float(masked_mean(p.reward_kl, full_mask))
    elif "kl_loss" in out:
        kl["kl"] = out.pop("kl_loss")
    if b.ref_logprobs is not None:
        policy_lp = b.old_logprobs if b.old_logprobs is not None else b.sampler_logprobs
        answered = full_mask.any(-1)
        kl["kl_seq_k1"] = float(masked_sum(policy_lp - b.ref_logprobs, full_mask, dim=-1)[answered].mean())
    return kl
