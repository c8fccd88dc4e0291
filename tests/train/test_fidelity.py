"""Each preset does what its paper does: one test per finding, each failing on the old trainer."""

from __future__ import annotations

import pytest
import torch

from rlvr.config import PRESET_SCHEDULES, resolve
from rlvr.core.shaping import overlong_penalty
from rlvr.train.build import build
from rlvr.train.data import PromptStream
from tests.tiny_run import tiny_config


def one_step(tiny_dir, tmp_path, *overrides, preset="grpo", step=1):
    cfg = tiny_config(tiny_dir, tmp_path, *overrides, preset=preset)
    trainer = build(cfg)
    stream = PromptStream(trainer.models.task.examples("train"), cfg.seed)
    return trainer, stream, trainer.step(stream, step)


@pytest.mark.parametrize("filters", [["rollout.top_p=0.5"], ["rollout.top_k=5"]], ids=["top_p=0.5", "top_k=5"])
def test_on_policy_is_weights_are_one_under_top_p_and_top_k(tiny_dir, tmp_path, filters):
    """the trainer's old log-probs are evaluated under the sampler's filter. Before the fix the
    tiny model read is_weight_mean 0.51 (top_p=0.5) and 0.10 (top_k=5), logprob_mismatch 0.68 / 2.3."""
    _, _, m = one_step(tiny_dir, tmp_path, "algorithm.is_correction.enabled=true", "rollout.max_new_tokens=8",
                       *filters)
    print(filters, "is_weight_mean", m["is_weight_mean"], "logprob_mismatch", m["logprob_mismatch"])
    assert abs(m["is_weight_mean"] - 1.0) < 1e-4
    assert m["logprob_mismatch"] < 1e-4


@pytest.mark.parametrize("preset", ["reinforce", "rloo", "remax"])
def test_sequence_sum_presets_weigh_every_token_alike(preset):
    """REINFORCE, RLOO and ReMax differentiate sum_t log pi_t (no 1/|y| per sequence)."""
    cfg = resolve({}, [f"algorithm.preset={preset}"])
    assert cfg.algorithm.aggregation == "seq_mean_token_sum_norm"
    from rlvr.core.aggregation import aggregate

    # A long and a short response with the same advantage: every token gets the same weight.
    mask = torch.tensor([[True] * 8, [True] * 2 + [False] * 6])
    lp = torch.zeros(2, 8, requires_grad=True)
    aggregate(-lp, mask, cfg.algorithm.aggregation, constant=cfg.rollout.max_new_tokens).backward()
    weights = lp.grad[mask]
    assert torch.all(weights == weights[0])


@pytest.mark.parametrize("preset", sorted(PRESET_SCHEDULES))
def test_off_policy_presets_go_off_policy(tiny_dir, tmp_path, preset):
    """the off-policy presets take several optimizer steps per rollout batch, so the ratio
    moves away from 1 (old: one step, ratio exactly 1, approx_kl exactly 0, no clip ever active)."""
    cfg = resolve({}, [f"algorithm.preset={preset}"])
    assert cfg.train.epochs * cfg.train.mini_batches > 1
    extra = ["algorithm.overlong.enabled=false"] if preset == "dapo" else []
    if preset == "ppo":
        extra.append("algorithm.critic.lr=3e-3")
    _, _, m = one_step(tiny_dir, tmp_path, "optim.lr=2e-2", *extra, preset=preset)
    assert m["approx_kl"] > 1e-6, m
    assert m["ratio_mean"] != 1.0


def test_every_epoch_draws_a_new_mini_batch_partition(tiny_dir, tmp_path, monkeypatch):
    """mini-batches are reshuffled per epoch (old: the same partition every epoch)."""
    from rlvr.train.optimize import Updater

    seen = []
    original = Updater.step

    def record(self, b, rows, acc, **kwargs):
        seen.append(tuple(sorted(rows)))
        return original(self, b, rows, acc, **kwargs)

    monkeypatch.setattr(Updater, "step", record)
    one_step(tiny_dir, tmp_path, "algorithm.loss.name=ppo_clip", "train.epochs=3", "train.mini_batches=4")
    epochs = [seen[i : i + 4] for i in range(0, 12, 4)]
    assert len(seen) == 12
    for e in epochs:  # each epoch covers every row once
        assert sorted(r for mb in e for r in mb) == list(range(64))
    assert len({tuple(sorted(e)) for e in epochs}) > 1, "the same partition in every epoch"


def test_dynamic_sampling_over_samples_by_the_keep_rate(tiny_dir, tmp_path, monkeypatch):
    """after a round keeps half the groups, the next asks for shortfall / keep rate prompts,
    and the step is full after two rounds (old: asked only the shortfall: 8 -> 4 + 2 + 1 = 7 groups)."""
    from rlvr.train import collect

    def every_other_group(rewards, group_ids):
        return (group_ids % 2 == 0)

    monkeypatch.setattr(collect, "filter_groups", every_other_group)
    asked = []
    trainer, stream, _ = None, None, None
    cfg = tiny_config(tiny_dir, tmp_path, "algorithm.overlong.enabled=false", preset="dapo")
    trainer = build(cfg)
    stream = PromptStream(trainer.models.task.examples("train"), cfg.seed)
    original = stream.take
    stream.take = lambda k: asked.append(k) or original(k)
    m = trainer.step(stream, 1)
    assert asked == [8, 8]
    assert m["kept_groups"] == 8.0 and m["gen_rounds"] == 2.0
    assert m["keep_rate"] == 0.5
    # The next step starts from the observed rate: one round of 16 prompts fills it.
    asked.clear()
    m = trainer.step(stream, 2)
    assert asked == [16] and m["kept_groups"] == 8.0 and m["gen_rounds"] == 1.0


def test_critic_optimizer_takes_its_settings_from_config(tiny_dir, tmp_path):
    """the critic's AdamW used torch's silent weight decay 0.01 and no schedule."""
    cfg = tiny_config(tiny_dir, tmp_path, "optim.weight_decay=0.0", "optim.scheduler=linear", "train.steps=4",
                      preset="ppo")
    trainer = build(cfg)
    group = trainer.optimizers.critic.param_groups[0]
    assert group["weight_decay"] == 0.0 and group["lr"] == cfg.algorithm.critic.lr
    stream = PromptStream(trainer.models.task.examples("train"), cfg.seed)
    trainer.step(stream, 1)
    # 4 epochs x 1 mini-batch = 4 optimizer steps of 16 in all: the linear schedule is at 12/16
    assert trainer.optimizers.critic.param_groups[0]["lr"] == pytest.approx(cfg.algorithm.critic.lr * 12 / 16)
    assert trainer.optimizers.policy_schedule.get_last_lr()[0] == pytest.approx(cfg.optim.lr * 12 / 16)


def test_remax_baseline_carries_the_samples_shaping(tiny_dir, tmp_path):
    """the greedy baseline gets the same overlong penalty and KL-in-reward as the samples."""
    cfg = tiny_config(tiny_dir, tmp_path, "algorithm.overlong.enabled=true", "algorithm.overlong.cache_len=3",
                      "algorithm.kl.coef=0.5", "algorithm.kl.placement=reward", "algorithm.kl.estimator=k1",
                      "rollout.max_new_tokens=6", preset="remax")
    trainer = build(cfg)
    with torch.no_grad():  # move the policy away from the reference so that the KL is not 0
        for p in trainer.models.policy.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    stream = PromptStream(trainer.models.task.examples("train"), cfg.seed)
    examples = stream.take(cfg.rollout.prompts_per_step)
    scored = trainer.collector.score(examples, trainer.models.engine.generate(trainer.collector.prompt_ids(examples),
                                                                              trainer.collector.sampling_params(1)))
    baseline = trainer.greedy_baseline(scored, 1)
    # The same greedy rollout, shaped by hand.
    from rlvr.core.kl import kl_divergence
    from rlvr.train.batch import TrainBatch
    from rlvr.train.seeds import GREEDY_BASELINE, derive_seed

    greedy = trainer.models.engine.generate(
        trainer.collector.prompt_ids(examples),
        trainer.collector.sampling_params(derive_seed(cfg.seed, GREEDY_BASELINE, 1), n=1, greedy=True))
    raw = trainer.collector.score(examples, greedy).reward_tensor()
    gb = TrainBatch.from_rollout(greedy, trainer.models.pad_id, "cpu")
    penalty = overlong_penalty(gb.loss_mask.sum(-1), 6, 3)
    kl = kl_divergence(trainer.forwards.logprobs(trainer.models.policy, gb),
                       trainer.forwards.logprobs(trainer.models.reference, gb), "k1", loss_mask=gb.loss_mask).sum(-1)
    expected = (raw + penalty - 0.5 * kl)[torch.tensor(scored.prompt_index)]
    torch.testing.assert_close(baseline, expected, rtol=0, atol=1e-6)
    assert (penalty != 0).any() and (kl.abs() > 1e-4).all()


def test_mask_truncated_drops_cut_responses_from_the_loss(tiny_dir, tmp_path, monkeypatch):
    """mask_truncated removes responses cut at max_new_tokens from the loss."""
    from rlvr.train import optimize

    masks = []
    original = optimize.rl_objective

    def capture(lp, **kw):
        masks.append(kw["loss_mask"].clone())
        return original(lp, **kw)

    monkeypatch.setattr(optimize, "rl_objective", capture)
    trainer, _, m = one_step(tiny_dir, tmp_path, "algorithm.mask_truncated=true", "rollout.max_new_tokens=3")
    truncated = [f == "length" for f in trainer.last_rollouts.finish_reasons]
    assert any(truncated)
    kept_rows = masks[0].any(-1)
    # micro-batch rows are sorted by length; count instead of aligning
    assert int(kept_rows.sum()) == truncated.count(False)
    assert m["masked_truncated_frac"] == pytest.approx(sum(truncated) / len(truncated))


def test_held_out_eval_is_paired_and_logs_pass_at_k_and_entropy(tiny_dir, tmp_path):
    """every evaluation uses the same sampling seed (old: a seed per step, so two evaluations
    of the same weights differed), samples each distinct problem as often as the set repeats it, logs
    pass@k up to that count and the entropy, and its interval counts distinct problems."""
    from rlvr.train.held_out import held_out_eval

    cfg = tiny_config(tiny_dir, tmp_path, "eval.every=1")
    trainer = build(cfg)
    from rlvr.tasks.base import repeat_to_size

    pool = trainer.models.task.examples("test")[:6]
    examples = repeat_to_size(pool, 24)  # six distinct problems, four times each
    distinct = {(ex.meta or {}).get("problem_id", ex.id) for ex in examples}
    repeats = len(examples) // len(distinct)
    assert repeats > 1 and len(examples) == repeats * len(distinct)
    first = held_out_eval(trainer, examples, 0)
    again = held_out_eval(trainer, examples, 8)
    assert first == again
    assert f"eval_pass@{repeats}" in first and "eval_pass@1" in first
    assert first["eval_pass@1"] == pytest.approx(first["eval_accuracy"])
    assert first[f"eval_pass@{repeats}"] >= first["eval_pass@1"]
    assert first["eval_entropy"] > 0
    from rlvr.eval.metrics import wilson_interval

    low, high = wilson_interval(first["eval_accuracy"], len(distinct))
    assert (first["eval_accuracy_ci_low"], first["eval_accuracy_ci_high"]) == pytest.approx((low, high))


def test_differential_smoothing_shifts_each_responses_advantage_by_its_old_log_prob(tiny_dir, tmp_path, monkeypatch):
    """Differential Smoothing (arXiv 2511.19942) in the trainer: the advantages the loss sees are the
    estimator's plus -gamma_p log pi_old(y) on correct responses and +gamma_n log pi_old(y) on wrong ones."""
    from rlvr.train import prepare

    seen = {}
    original_adv, original_ds = prepare.compute_advantages, prepare.differential_smoothing

    def capture_adv(*args, **kwargs):
        seen["adv"] = original_adv(*args, **kwargs)
        return seen["adv"]

    def capture_ds(adv, mask, seq_logprobs, correct, **kw):
        seen.update(seq_logprobs=seq_logprobs.clone(), correct=correct.clone(), mask=mask.clone(), kw=kw)
        seen["shaped"] = original_ds(adv, mask, seq_logprobs, correct, **kw)
        return seen["shaped"]

    monkeypatch.setattr(prepare, "compute_advantages", capture_adv)
    monkeypatch.setattr(prepare, "differential_smoothing", capture_ds)
    cfg = tiny_config(tiny_dir, tmp_path, "algorithm.differential_smoothing.gamma_p=0.2",
                      "algorithm.differential_smoothing.gamma_n=0.1")
    trainer = build(cfg)
    score = trainer.collector.score

    def every_third_correct(examples, rollout):  # the untrained tiny model solves nothing: both branches
        scored = score(examples, rollout)
        scored.correct = [i % 3 == 0 for i in range(len(scored.correct))]
        return scored

    trainer.collector.score = every_third_correct
    m = trainer.step(PromptStream(trainer.models.task.examples("train"), cfg.seed), 1)
    assert seen["kw"] == {"gamma_p": 0.2, "gamma_n": 0.1}
    correct = trainer.last_rollouts.correct_tensor()
    assert correct.any() and (~correct).any()
    assert torch.equal(seen["correct"], correct)
    # pi_old is the trainer's policy before the update; on-policy it matches the sampler's log-probs
    sampler = trainer.last_rollouts
    b_lp = torch.zeros_like(seen["seq_logprobs"])
    for i, lps in enumerate(sampler.sampler_logprobs):
        b_lp[i] = float(sum(lps))
    torch.testing.assert_close(seen["seq_logprobs"], b_lp, atol=1e-4, rtol=0)
    adv = seen["adv"][0]
    shift = torch.where(correct, -0.2 * seen["seq_logprobs"], 0.1 * seen["seq_logprobs"])
    want = torch.where(seen["mask"], adv + shift[:, None], torch.zeros(()))
    torch.testing.assert_close(seen["shaped"], want)
    assert m["smoothing_shift"] == pytest.approx(float(((seen["shaped"] - adv)[seen["mask"]]).mean()), rel=1e-5)


def test_differential_smoothing_config_is_checked_before_any_work(tiny_dir, tmp_path):
    with pytest.raises(Exception, match="gamma_p"):
        tiny_config(tiny_dir, tmp_path, "algorithm.differential_smoothing.gamma_n=0.1")
    with pytest.raises(Exception, match="greater than or equal to 0"):
        tiny_config(tiny_dir, tmp_path, "algorithm.differential_smoothing.gamma_p=-1")


@pytest.mark.parametrize("kl", [["algorithm.kl.estimator=k1", "algorithm.kl.placement=reward"],
                                ["algorithm.kl.estimator=k3", "algorithm.kl.placement=loss"]], ids=["k1-reward", "k3-loss"])
def test_kl_seq_k1_measures_the_same_distance_whatever_the_placement(tiny_dir, tmp_path, kl):
    """kl_seq_k1: sum_t (log pi - log pi_ref) per response, averaged; 0 before the first update, > 0 after."""
    cfg = tiny_config(tiny_dir, tmp_path, "algorithm.kl.coef=0.1", "optim.lr=3e-2", *kl)
    trainer = build(cfg)
    stream = PromptStream(trainer.models.task.examples("train"), cfg.seed)
    first = trainer.step(stream, 1)
    assert first["kl_seq_k1"] == pytest.approx(0.0, abs=1e-4)  # the reference is the initial policy
    later = [trainer.step(stream, s)["kl_seq_k1"] for s in (2, 3)]
    assert later[-1] > 1e-3
