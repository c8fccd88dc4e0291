"""One RL step (DESIGN.md section 5): rollout -> reward -> advantage -> updates.

Every algorithmic choice goes through a core registry (advantage estimator, policy loss, aggregation,
KL estimator), and what one micro-batch minimises is `rlvr.core.objective.rl_objective`, a pure
function of tensors; this file does the forward passes, the backward pass and the optimizer steps.
- Every trainer log-prob (old, current, reference, and the entropy that feeds the loss) is evaluated
  under the sampler's temperature, top-k and top-p (`rlvr.core.filtering`), so on-policy ratios and
  IS weights are 1 to float rounding whatever the filter.
- Several optimizer steps per rollout batch (train.epochs x train.mini_batches) draw a fresh partition
  into mini-batches each epoch; every random stream's seed comes from `rlvr.train.seeds.derive_seed`.
How it departs from a textbook loop:
- The old-policy log-probs are not recomputed when the update is exactly on-policy (one epoch, one
  mini-batch, no KL in the reward): the first forward pass of the update gives the same numbers, so the
  ratio is taken against its detached value, and an IS correction's weights pi_old / pi_sampler too (each
  micro-batch's from its own forward, before its backward; their metrics summed over micro-batches).
- Loss denominators (token count, sequence count) are those of the whole mini-batch, so splitting it into
  micro-batches (or ranks) leaves the gradient unchanged.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import traceback
from typing import Any

import torch
from torch import Tensor

from rlvr.config import RunConfig
from rlvr.core.advantages import compute_advantages, outcome_to_token_rewards
from rlvr.core.importance import importance_weights
from rlvr.core.kl import adaptive_kl_coef, kl_divergence
from rlvr.core.losses import COVARIANCE_LOSSES, covariance_selection
from rlvr.core.masked import masked_mean, masked_sum
from rlvr.core.objective import rl_objective, value_objective
from rlvr.core.shaping import differential_smoothing, filter_groups, overlong_penalty
from rlvr.eval.behaviour import REFLECTION_PHRASES, behaviour_metrics
from rlvr.models.logprobs import response_logprobs
from rlvr.models.lora import reference_mode
from rlvr.rollout import SamplingParams
from rlvr.train.batch import (
    MetricSums,
    Scored,
    TrainBatch,
    concat_scored,
    minibatch_rows,
    rollout_metrics,
    select_prompts,
)
from rlvr.train.distributed import Topology
from rlvr.train.memory import freed_memory_returned
from rlvr.train.optim import adamw
from rlvr.train.routing import RoutingReplay
from rlvr.train.seeds import COVARIANCE, GREEDY_BASELINE, MINIBATCH, ROLLOUT, derive_seed


class NoLearningSignal(RuntimeError):
    """Too many steps in a row with nothing to learn from: no sample earned any reward."""

    stopped = True


class RewardErrors:
    """Counts reward calls that failed (`count`: raised or timed out; `timeouts`: ran past the limit); the
    first failure of each kind is logged once."""

    def __init__(self, log=print):
        self.count = 0
        self.timeouts = 0
        self.logged: set[str] = set()
        self.log = log

    def record(self, exc: BaseException) -> None:
        from rlvr.rewards.user import RewardTimeout

        self.count += 1
        kind = "timeout" if isinstance(exc, RewardTimeout) else "error"
        self.timeouts += kind == "timeout"
        if kind in self.logged:
            return
        self.logged.add(kind)
        if kind == "timeout":
            self.log(f"{exc} (logged once, counted in reward_timeouts and reward_errors)")
        else:
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            self.log(f"a reward function raised; that sample gets reward 0 (logged once, counted in reward_errors):\n{tb}")


class RLStep:
    """Holds the models, optimizers and algorithm settings; `run(examples)` does one step."""

    def __init__(self, cfg: RunConfig, model, tokenizer, task, engine, *, ref_model=None, critic=None, log=print,
                 topology: Topology | None = None, lora=None):
        self.cfg = cfg
        self.topo = topology or Topology()
        self.lora = lora
        """The peft model when training LoRA adapters (`model` is its base model with the adapters in it)."""
        self.model = model
        self.tokenizer = tokenizer
        self.task = task
        self.engine = engine
        self.ref_model = ref_model
        self.critic = critic
        self.log = log
        self.reward_errors = RewardErrors(log)
        self.kl_coef = cfg.algorithm.kl.coef
        self.bad_steps_in_row = 0
        self.nonfinite_steps = 0
        """Optimizer steps skipped for a non-finite loss or gradient."""
        self.defer_is_weights = True
        """On an exactly on-policy update, take the IS weights from each micro-batch's own forward instead of a
        separate pi_old pass (the same numbers; False runs that pass, which the tests compare against)."""
        self.no_signal_steps = 0
        """Steps with nothing to train on: dynamic sampling kept no group whose rewards differ."""
        self.no_signal_in_row = 0
        self.last_scored: Scored | None = None
        o = cfg.optim
        self.optimizer = adamw(
            [p for p in model.parameters() if p.requires_grad], lr=o.lr, betas=o.betas, eps=o.eps,
            weight_decay=o.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.critic_optimizer = self.critic_scheduler = None
        if critic is not None:
            # The critic's own learning rate; everything else as the policy's optimizer and schedule.
            self.critic_optimizer = adamw(
                critic.parameters(), lr=cfg.algorithm.critic.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay
            )
            self.critic_scheduler = torch.optim.lr_scheduler.LambdaLR(self.critic_optimizer, self._lr_factor)
        # This rank's rows of the current batch (set by `update`; None outside an update).
        self.own: set[int] | None = None
        # Dynamic sampling's running keep rate (groups kept / groups generated), over the whole run.
        self.ds_seen = 0
        self.ds_kept = 0
        # The engine contract: the policy's version counts optimizer steps; the engine gets the weights
        # (and the version) pushed after every update, and each push is checked.
        self.policy_version = 0
        self.sync_max_diff = 0.0
        own = getattr(engine, "model", None)
        self.lower_precision_engine = own is not None and own is not model and own.dtype != next(model.parameters()).dtype
        """The engine samples from its own copy of the weights in a lower precision (rollout.dtype)."""
        self._probe = self._make_probe()
        # FSDP2: the sharded modules, gathered for each step (rlvr.train.distributed.Topology.full_params)
        self.sharded = [m for m in (model, critic) if self.topo.fsdp_units([m])]
        if ref_model is not None and ref_model is not model and self.topo.fsdp_units([ref_model]):
            self.sharded.append(ref_model)
        self.streamed = any(self.topo.streams(m) for m in self.sharded)
        """FSDP2 per layer (train.fsdp_reshard=layer): every forward and backward is a collective, so the ranks
        run as many micro-batches each (`_aligned`), and FSDP2 itself sums the gradients into the shards."""
        with self.topo.full_params(self.sharded):
            self.push_weights()
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        # response_logprobs' `packed`: None uses the packed forward wherever the model allows it.
        self.packed = None if cfg.train.packed else False
        self.policy_layer: int | None = None
        """The decoder layer whose internal policy the objective uses this step (algorithm.layer_policy), or None."""
        if cfg.algorithm.layer_policy is not None:
            from rlvr.models.layers import check_layer

            check_layer(model, cfg.algorithm.layer_policy.layer)
        self.routing = RoutingReplay.build(model, cfg.algorithm.routing_replay, engine)
        """Mixture-of-experts models: the routes recorded, replayed and compared (rlvr.train.routing)."""
        if self.routing is not None:
            self.packed = False  # routes are recorded in, and replayed into, the padded layout

    # --- the engine contract -------------------------------------------------------------------------

    def _make_probe(self) -> tuple[list[int], list[int]]:
        """A few fixed tokens whose log-probs the engine and the trainer must agree on after each push."""
        ids = self.tokenizer("Question: what is 12 + 30? Answer: 42, since 12 + 30 = 42.", add_special_tokens=False)["input_ids"]
        vocab = self.model.config.vocab_size
        ids = [i for i in ids if 0 <= i < vocab][:24]
        if len(ids) < 4:  # a tokenizer that maps the text to almost nothing: a fixed id pattern instead
            ids = [(7 * k + 3) % vocab for k in range(16)]
        half = len(ids) // 2
        return ids[:half], ids[half:]

    def push_weights(self) -> None:
        """engine.update_weights(model, version), then the sync check (DESIGN.md section 6). An engine with its own
        copy of an FSDP-sharded policy gets the full weights streamed, gathered bucket by bucket."""
        source = self.model
        if self.model in self.sharded and getattr(self.engine, "model", None) is not self.model and self.lora is None:
            source = self.topo.full_weights(self.model)  # (a LoRA policy: the engine merges the gathered weights)
        # A LoRA policy's merge reads the base weights whole: gathered for it under per-layer FSDP.
        merging = [self.model] if self.lora is not None and self.model in self.sharded else []
        with self.topo.full_params(merging):
            self.engine.update_weights(source, self.policy_version)
        prompt, response = self._probe
        engine_lp = torch.tensor(self.engine.logprobs(prompt, response), dtype=torch.float32)
        device = next(self.model.parameters()).device
        ids = torch.tensor([prompt + response], device=device)
        with torch.no_grad():
            trainer_lp, _ = response_logprobs(self.model, ids, torch.ones_like(ids), len(response), packed=False)
        diff = float((engine_lp - trainer_lp[0].float().cpu()).abs().max())
        self.sync_max_diff = diff
        tol = self.cfg.rollout.sync_tolerance or 1e-3
        check = getattr(self.engine, "weight_sync_error", None)
        error = check(self.model) if check is not None else None
        if error is not None and error > 0:
            raise RuntimeError(
                f"weight sync failed at policy version {self.policy_version}: the engine's copy of the weights differs "
                f"from the trainer's (cast to its dtype) by up to {error:.3g}; check the engine's update_weights "
                f"({type(self.engine).__name__})")
        if self.lower_precision_engine and error is not None and self.cfg.rollout.sync_tolerance is None:
            # A lower-precision copy checked exactly above: the probe's gap is precision (it grows as the policy
            # sharpens, bfloat16 logits of unlikely tokens), logged as weight_sync_max_diff, not a sync failure.
            return
        if not diff <= tol:
            raise RuntimeError(
                f"weight sync failed at policy version {self.policy_version}: the rollout engine's log-probs of a fixed "
                f"probe differ from the trainer's by up to {diff:.3g} nats (rollout.sync_tolerance = {tol:g}), so it "
                "would sample from stale or corrupted weights. Check the engine's update_weights "
                f"({type(self.engine).__name__}); raise rollout.sync_tolerance only if the engine runs at a lower precision"
            )

    # --- schedule ---------------------------------------------------------------------------------

    def _lr_factor(self, opt_step: int) -> float:
        o, t = self.cfg.optim, self.cfg.train
        total = max(1, t.steps * t.epochs * t.mini_batches)
        if opt_step < o.warmup_steps:
            return (opt_step + 1) / (o.warmup_steps + 1)
        progress = (opt_step - o.warmup_steps) / max(1, total - o.warmup_steps)
        if o.scheduler == "linear":
            return max(0.0, 1.0 - progress)
        if o.scheduler == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    # --- rollout and reward -----------------------------------------------------------------------

    def sampling_params(self, step_seed: int, *, n: int | None = None, greedy: bool = False,
                        stream_offset: int = 0) -> SamplingParams:
        r = self.cfg.rollout
        return SamplingParams(
            stream_offset=stream_offset,
            n=r.group_size if n is None else n,
            temperature=0.0 if greedy else r.temperature,
            top_p=1.0 if greedy else r.top_p,
            top_k=0 if greedy else r.top_k,
            max_new_tokens=r.max_new_tokens,
            stop=tuple(r.stop),
            seed=step_seed,
        )

    def prompt_ids(self, examples: list[Any]) -> list[list[int]]:
        texts = [self.task.prompt(ex, self.tokenizer) for ex in examples]
        return [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]

    def score(self, examples: list[Any], rollout) -> Scored:
        responses = self.tokenizer.batch_decode(rollout.response_ids, skip_special_tokens=True)
        rewards, correct, components = [], [], {}
        for i, text in enumerate(responses):
            example = examples[rollout.prompt_index[i]]
            try:
                result = self.task.score(text, example)
                reward, ok, comps = float(result.reward), bool(result.correct), dict(result.components)
                if not math.isfinite(reward):
                    raise ValueError(f"reward function returned a non-finite reward {reward!r}")
            except Exception as exc:  # contained: one bad sample must not end the run
                self.reward_errors.record(exc)
                reward, ok, comps = 0.0, False, {}
            rewards.append(reward)
            correct.append(ok)
            for name, value in comps.items():
                components.setdefault(name, [0.0] * len(responses))[i] = float(value)
        return Scored(
            rollout=rollout,
            examples=examples,
            rewards=torch.tensor(rewards, dtype=torch.float32),
            correct=torch.tensor(correct, dtype=torch.bool),
            components={k: torch.tensor(v) for k, v in components.items()},
            responses=responses,
        )

    def generate_and_score(self, stream, step: int) -> tuple[Scored, dict[str, float]]:
        """Rollouts for one step, with DAPO dynamic sampling when enabled.

        Dynamic sampling: each round asks for the groups still missing divided by the keep rate observed
        so far in the run (capped at `max_oversample` times the shortfall), keeps the groups whose
        rewards differ, and stops once the batch is full; kept groups beyond `prompts_per_step` are
        dropped (DAPO's over-sample-then-truncate, as verl does). After `max_rounds` the step trains
        on what it has.
        """
        cfg = self.cfg
        want = cfg.rollout.prompts_per_step
        ds = cfg.algorithm.dynamic_sampling
        rounds = ds.max_rounds if ds.enabled else 1
        kept: list[Scored] = []
        kept_groups, gen_time, gen_tokens, raw = 0, 0.0, 0, []
        for rnd in range(rounds):
            ask = want
            if ds.enabled:
                short = want - kept_groups
                rate = self.ds_kept / self.ds_seen if self.ds_seen else 1.0
                ask = min(math.ceil(short / max(rate, 1e-9)), math.ceil(short * ds.max_oversample))
            examples = stream.take(ask)
            scored = self.generate_shared(examples, derive_seed(cfg.seed, ROLLOUT, step, rnd))
            batch = scored.rollout
            gen_time += batch.gen_time_s
            gen_tokens += batch.num_generated_tokens
            raw.append(scored)
            if not ds.enabled:
                kept.append(scored)
                break
            group_ids = torch.tensor(batch.prompt_index)
            keep = filter_groups(scored.rewards, group_ids)
            kept_prompts = sorted({batch.prompt_index[i] for i in range(len(keep)) if keep[i]})
            self.ds_seen += len(examples)
            self.ds_kept += len(kept_prompts)
            kept_prompts = kept_prompts[: want - kept_groups]
            if kept_prompts:
                kept.append(select_prompts(scored, kept_prompts))
                kept_groups += len(kept_prompts)
            if kept_groups >= want:
                break
        stats = {"gen_time_s": gen_time, "gen_tokens": gen_tokens, "gen_rounds": len(raw)}
        if ds.enabled:
            stats["keep_rate"] = self.ds_kept / max(self.ds_seen, 1)
        merged_raw = concat_scored(raw)
        stats["raw"] = merged_raw
        return (concat_scored(kept) if kept else None), stats

    def generate_shared(self, examples: list[Any], seed: int, *, n: int | None = None, greedy: bool = False) -> Scored:
        """Generate and score `examples` (one group each), every rank its contiguous share; every rank
        returns the whole scored batch, in prompt order, as one process would have generated it (each
        sample keeps its random stream: `SamplingParams.stream_offset`)."""
        share = self.topo.shard(len(examples))  # possibly uneven (dynamic sampling's rounds), possibly empty
        mine = [examples[i] for i in share]
        group = self.cfg.rollout.group_size if n is None else n
        params = self.sampling_params(seed, n=n, greedy=greedy, stream_offset=share.start * group)
        # An engine that runs the policy object itself (hf) reads its parameters directly: the whole model gathered.
        gathered = [self.model] if getattr(self.engine, "model", None) is self.model and self.model in self.sharded else []
        with self.topo.full_params(gathered):
            batch = self.engine.generate(self.prompt_ids(mine), params)
        scored = self.score(mine, batch)
        if not self.topo.distributed:
            return scored
        parts = self.topo.all_gather_objects(scored)
        merged = concat_scored(parts)
        merged.rollout.gen_time_s = max(p.rollout.gen_time_s for p in parts)  # the ranks ran side by side
        return merged

    # --- the update -------------------------------------------------------------------------------

    def run(self, stream, step: int) -> dict[str, float]:
        # train.fsdp_reshard=step: the whole model gathered for the whole step; per layer: by the units themselves
        with self.topo.full_params([] if self.streamed else self.sharded):
            return self._run(stream, step)

    def _run(self, stream, step: int) -> dict[str, float]:
        t0 = time.perf_counter()
        scored, gen = self.generate_and_score(stream, step)
        raw: Scored = gen.pop("raw")
        self.last_scored = raw
        metrics = rollout_metrics(raw, self.cfg.rollout.max_new_tokens)
        phrases = self.cfg.reflection_phrases if self.cfg.reflection_phrases is not None else REFLECTION_PHRASES
        metrics.update(behaviour_metrics(
            raw.responses, lambda text: len(self.tokenizer(text, add_special_tokens=False)["input_ids"]), phrases))
        metrics["reward_errors"] = float(self.reward_errors.count)
        metrics["reward_timeouts"] = float(self.reward_errors.timeouts)
        metrics["gen_time_s"] = gen["gen_time_s"]
        metrics["gen_tokens_per_s"] = gen["gen_tokens"] / max(gen["gen_time_s"], 1e-9)
        metrics["gen_rounds"] = float(gen["gen_rounds"])
        if "keep_rate" in gen:
            metrics["keep_rate"] = gen["keep_rate"]
        t_train = time.perf_counter()
        if scored is None:
            # Dynamic sampling found no group with any spread: nothing to learn from this step.
            metrics.update(kept_groups=0.0, no_signal_step=1.0)
            self.no_signal_steps += 1
            # Only steps in which no sample earned any reward count towards stopping (a task too hard for
            # the model, or a broken reward); a policy that answers alike with some reward has converged.
            nothing = float(raw.rewards.max()) <= 0.0
            self.no_signal_in_row = self.no_signal_in_row + 1 if nothing else 0
            limit = self.cfg.algorithm.dynamic_sampling.max_no_signal_steps
            why = (f"no sample earned any reward, {self.no_signal_in_row} such step(s) in a row" if nothing else
                   "within each group every sample scored alike")
            self.log(f"step {step}: dynamic sampling kept no group ({why}); no update this step")
            if self.no_signal_in_row >= limit:
                raise NoLearningSignal(
                    f"{self.no_signal_in_row} steps in a row in which no sample earned any reward, so nothing was "
                    "trained: the task is too hard for this model, or the reward is broken. Check "
                    "samples.jsonl, make the task easier, raise rollout.group_size or "
                    "algorithm.dynamic_sampling.max_rounds, or raise algorithm.dynamic_sampling.max_no_signal_steps")
        else:
            self.no_signal_in_row = 0
            with freed_memory_returned(self.cfg.train.release_memory):
                metrics.update(self.update(scored, step))
        metrics["train_time_s"] = time.perf_counter() - t_train
        metrics["step_time_s"] = time.perf_counter() - t0
        metrics["lr"] = self.scheduler.get_last_lr()[0]
        metrics["kl_coef"] = self.kl_coef
        metrics["nonfinite_steps"] = float(self.nonfinite_steps)
        metrics["no_signal_steps"] = float(self.no_signal_steps)
        return metrics

    def _mismatch_stats(self) -> dict[str, float]:
        """The training-inference mismatch of this step's tokens: max and quantiles of |sampler - trainer|
        log-prob (the mean is `logprob_mismatch`), over every rank's tokens."""
        parts = [t.float().cpu() for t in self._mismatch]
        if self.topo.distributed:
            parts = [t for ranked in self.topo.all_gather_objects(parts) for t in ranked]
        values = torch.cat(parts) if parts else torch.zeros(0)
        if values.numel() == 0:
            return {}
        q = torch.quantile(values[:16_000_000], torch.tensor([0.5, 0.9, 0.99]))
        return {"logprob_mismatch_max": float(values.max()), "logprob_mismatch_p50": float(q[0]),
                "logprob_mismatch_p90": float(q[1]), "logprob_mismatch_p99": float(q[2])}

    def _filter(self) -> dict[str, Any]:
        """The sampler's processing, under which every trainer log-prob is evaluated (rlvr.core.filtering)."""
        r = self.cfg.rollout
        out: dict[str, Any] = {"temperature": r.temperature, "top_k": r.top_k, "top_p": r.top_p}
        if self.policy_layer is not None:  # Bottom-up Policy Optimization's phase: pi_K instead of the policy
            out.update(layer=self.policy_layer, final_norm=self.cfg.algorithm.layer_policy.final_norm)
        return out

    def _start_layer_policy(self, step: int) -> dict[str, float]:
        """Which policy this step's objective uses (algorithm.layer_policy); says so at the switch."""
        lp = self.cfg.algorithm.layer_policy
        if lp is None:
            self.policy_layer = None
            return {}
        self.policy_layer = lp.layer if step <= lp.steps else None
        if step == lp.steps + 1:
            self.log(f"step {step}: the layer-policy phase is over (layer {lp.layer} for {lp.steps} steps); "
                     "training the full policy from now on")
        return {"layer_policy_active": float(self.policy_layer is not None)}

    def _own_rows(self, prompt_index: list[int]) -> list[int]:
        """The rows this rank trains on: the samples of a contiguous share of the batch's groups (every
        rank holds the whole batch; a share may be empty when the batch has fewer groups than ranks)."""
        groups = sorted(set(prompt_index))
        w, r, g = self.topo.world_size, self.topo.rank, len(groups)
        mine = set(groups[r * g // w : (r + 1) * g // w])
        return [i for i, p in enumerate(prompt_index) if p in mine]

    def update(self, scored: Scored, step: int) -> dict[str, float]:
        cfg, alg = self.cfg, self.cfg.algorithm
        device = next(self.model.parameters()).device
        b = TrainBatch.from_rollout(scored.rollout, self.pad_id, device)
        self.own = set(self._own_rows(scored.rollout.prompt_index))
        n = b.loss_mask.shape[0]
        group_ids = torch.tensor(scored.rollout.prompt_index, device=device)
        rewards = scored.rewards.to(device)
        if alg.overlong.enabled:
            rewards = rewards + overlong_penalty(b.loss_mask.sum(-1), cfg.rollout.max_new_tokens, alg.overlong.cache_len)

        off_policy = cfg.train.epochs > 1 or cfg.train.mini_batches > 1
        kl_in_reward = self.ref_model is not None and self.kl_coef > 0 and alg.kl.placement == "reward"
        # Old log-probs are recomputed only when the first forward pass of the update cannot stand in
        # for them: several optimizer steps per batch, an IS correction, a KL penalty in the reward, or
        # samples drawn with other weights than the trainer's current ones.
        stale = scored.rollout.policy_version != self.policy_version
        acc = MetricSums()
        phase = self._start_layer_policy(step)
        # In the layer-policy phase the old log-probs are pi_K's, never the sampler's (which are the full model's).
        layer_phase = self.policy_layer is not None
        smoothing = alg.differential_smoothing
        # On an exactly on-policy update the IS weights pi_old / pi_sampler need no pass of their own either:
        # each micro-batch takes them from its own forward (detached) before its backward (_optimizer_step).
        recompute = off_policy or kl_in_reward or stale or layer_phase or smoothing
        # Deferred only where nothing is replayed: r2 / r3 need the old forward's routes (or its replay).
        deferred_is = (alg.is_correction.enabled and not recompute and self.defer_is_weights
                       and (self.routing is None or not self.routing.replays))
        if recompute or (alg.is_correction.enabled and not deferred_is):
            around = self.routing.old_forward(b, acc) if self.routing is not None else None
            b.old_logprobs = self._logprobs_no_grad(self.model, b, around=around)
        if self.ref_model is not None and self.kl_coef > 0:
            with reference_mode(self.lora):
                b.ref_logprobs = self._logprobs_no_grad(self.ref_model, b)
        if self.critic is not None:
            b.values = self._values_no_grad(b)
        baseline = self.greedy_baseline(scored, step).to(device) if alg.advantage.name == "remax" else None

        token_rewards = outcome_to_token_rewards(rewards, b.loss_mask)
        reward_kl = penalties = None
        if kl_in_reward:
            reward_kl = kl_divergence(b.old_logprobs, b.ref_logprobs, alg.kl.estimator, loss_mask=b.loss_mask)
            penalties = -(self.kl_coef * reward_kl)
        b.advantages, b.returns = compute_advantages(
            alg.advantage.name,
            rewards=rewards,
            loss_mask=b.loss_mask,
            group_ids=group_ids,
            values=b.values,
            baseline_rewards=baseline,
            token_rewards=token_rewards,
            penalties=penalties,
            **alg.advantage.options(),
        )
        if smoothing is not None:
            seq_logprobs = masked_sum(b.old_logprobs, b.loss_mask, dim=-1)
            shaped = differential_smoothing(b.advantages, b.loss_mask, seq_logprobs, scored.correct.to(device),
                                            gamma_p=smoothing.gamma_p, gamma_n=smoothing.gamma_n)
            acc.add("smoothing_shift", shaped - b.advantages, b.loss_mask)
            b.advantages = shaped
        is_metrics: dict[str, Tensor] = {}
        # pi_K against the full model's sampler is no training-inference mismatch: no IS weights in that phase
        if alg.is_correction.enabled and not layer_phase and not deferred_is:
            c = alg.is_correction
            b.is_weights, is_metrics = importance_weights(
                b.old_logprobs, b.sampler_logprobs, b.loss_mask, level=c.level, mode=c.mode, cap=c.cap
            )
        full_mask = b.loss_mask
        if deferred_is:
            b.is_mask = full_mask
        if alg.mask_truncated:
            # DAPO's overlong filtering: truncated responses leave the loss (and its denominators) but
            # kept their place in their group's baseline above.
            truncated = torch.tensor([f == "length" for f in scored.rollout.finish_reasons], device=device)
            b.loss_mask = b.loss_mask & ~truncated[:, None]

        self._mismatch: list[Tensor] = []  # |sampler - trainer| log-prob of every valid token this rank trains
        for epoch in range(cfg.train.epochs):  # noqa: B007 (epoch is part of the seeds)
            # A fresh partition every epoch (cleanrl, verl), from a seed no other stream shares.
            seed = derive_seed(cfg.seed, MINIBATCH, step, epoch)
            for index, rows in enumerate(minibatch_rows(scored.rollout.prompt_index, cfg.train.mini_batches, seed)):
                self._optimizer_step(b, rows, acc, derive_seed(cfg.seed, COVARIANCE, step, epoch, index))
        out = self._merge_metrics(acc).means()
        moments = out.pop("_is_ratio", None), out.pop("_is_ratio_sq", None)
        if None not in moments and not layer_phase:
            # population std of the raw ratio over every token, from its first two moments (float64 sums)
            is_metrics["is_ratio_std"] = torch.tensor(max(moments[1] - moments[0] ** 2, 0.0) ** 0.5)
        b.is_mask = None
        if self.routing is not None:
            out = self.routing.finish(out)
        out["kept_groups"] = float(len(set(scored.rollout.prompt_index)))
        out.update(phase)
        # In the layer-policy phase the sampler/trainer mismatch metrics would compare pi_K with the full model.
        if not layer_phase and "logprob_mismatch" not in is_metrics and b.old_logprobs is not None:
            is_metrics["logprob_mismatch"] = masked_mean((b.old_logprobs - b.sampler_logprobs).abs(), full_mask)
        if b.old_logprobs is not None and full_mask.any() and not layer_phase:
            # the spread of the raw training-inference ratio pi_old / pi_sampler over tokens (before any IS
            # truncation): how far the sampler's distribution is from the trainer's, whether or not IS corrects it
            ratio = torch.exp((b.old_logprobs - b.sampler_logprobs).double())[full_mask]
            is_metrics["is_ratio_std"] = ratio.std(unbiased=False) if ratio.numel() > 1 else ratio.new_zeros(())
        if b.old_logprobs is not None and not layer_phase:
            own = sorted(self.own) if self.topo.distributed else slice(None)
            self._mismatch = [(b.old_logprobs[own] - b.sampler_logprobs[own]).abs()[full_mask[own]]]
        out.update({k: float(v) for k, v in is_metrics.items()})
        out.update(self._mismatch_stats())
        # "kl" is the policy's KL from the reference model; null when no reference model is loaded.
        out["kl"] = None
        if reward_kl is not None:
            out["kl"] = float(masked_mean(reward_kl, full_mask))
        elif "kl_loss" in out:
            out["kl"] = out.pop("kl_loss")
        if b.ref_logprobs is not None:
            # KL(pi || pi_ref) of whole responses, estimated by k1 summed over each response (unbiased on the
            # policy that sampled them): one measure of the distance to the reference for every placement
            policy_lp = b.old_logprobs if b.old_logprobs is not None else b.sampler_logprobs
            answered = full_mask.any(-1)
            out["kl_seq_k1"] = float(masked_sum(policy_lp - b.ref_logprobs, full_mask, dim=-1)[answered].mean())
        if alg.kl.adaptive and out["kl"] is not None:
            self.kl_coef = adaptive_kl_coef(self.kl_coef, out["kl"], alg.kl.target, alg.kl.horizon, n)
        out.setdefault("is_weight_mean", 1.0)
        out["advantage_mean"] = float(masked_mean(b.advantages, b.loss_mask))
        out["sampled_policy_version"] = float(scored.rollout.policy_version)
        self.policy_layer = None  # outside an update (evaluation, probes) the policy is the full model
        self.push_weights()
        out["policy_version"] = float(self.policy_version)
        out["weight_sync_max_diff"] = self.sync_max_diff
        if alg.mask_truncated:
            out["masked_truncated_frac"] = float(1 - b.loss_mask.any(-1).float().mean())
        return out

    def _optimizer_step(self, b: TrainBatch, rows: list[int], acc: MetricSums, cov_seed: int) -> None:
        cfg, alg = self.cfg, self.cfg.algorithm
        loss_params = alg.loss.model_dump(exclude={"name"})
        self.optimizer.zero_grad(set_to_none=True)
        if self.critic_optimizer is not None:
            self.critic_optimizer.zero_grad(set_to_none=True)
        # Denominators of the whole mini-batch: the gradient does not depend on the micro-batch size.
        mask = b.loss_mask[rows]
        num_tokens = mask.sum()
        num_sequences = mask.any(dim=-1).sum()
        if self.topo.distributed and os.environ.get("RLVR_FAULT_LOCAL_DENOMINATORS") == "1":
            # Fault injection for the tests' negative control: per-rank denominators (the classic bug).
            local_mask = b.loss_mask[[r for r in rows if r in self.own]]
            num_tokens, num_sequences = local_mask.sum(), local_mask.any(dim=-1).sum()
        constant = alg.aggregation_constant or cfg.rollout.max_new_tokens
        if alg.loss.name in COVARIANCE_LOSSES:
            # Clip-Cov / KL-Cov pick their tokens from the statistics of the whole mini-batch.
            b.cov_selected = self._covariance_selection(b, rows, loss_params, cov_seed)
        finite = True
        step_loss = torch.zeros(())
        step_parts: dict[str, float] = {"policy_loss": 0.0}
        if self.critic is not None:
            step_parts["value_loss"] = 0.0
        local = [r for r in rows if r in self.own]
        for mb, real in self._aligned(b, b.micro_batches(local, cfg.train.micro_batch_size) if local else []):
            routed = (self.routing.update_forward(mb, acc) if self.routing is not None and real
                      else contextlib.nullcontext())
            with routed:
                lp, ent = response_logprobs(
                    self.model, mb.input_ids, mb.attention_mask, mb.t, return_entropy=True, packed=self.packed,
                    checkpoint_layers=cfg.train.checkpoint_activations, entropy_grad=alg.entropy_coef != 0,
                    **self._filter(),
                )
            if not real or not finite:
                # Per-layer FSDP: a filler micro-batch (or one after a non-finite loss) still runs its forward and a
                # zero backward, the collectives every rank must make; it adds nothing to the gradient.
                self._zero_backward(lp, mb)
                continue
            params = dict(loss_params)
            if mb.cov_selected is not None:
                params["selected"] = mb.cov_selected
            if mb.is_mask is not None:
                mb.is_weights = self._is_weights_of(lp.detach(), mb, acc)
            loss, m = rl_objective(
                lp, loss_mask=mb.loss_mask, advantages=mb.advantages, old_logprobs=mb.old_logprobs,
                loss=alg.loss.name, loss_params=params, aggregation=alg.aggregation,
                num_tokens=num_tokens, num_sequences=num_sequences, constant=constant,
                is_weights=mb.is_weights,
                ref_logprobs=mb.ref_logprobs if alg.kl.placement == "loss" else None,
                kl_coef=self.kl_coef, kl_estimator=alg.kl.estimator,
                entropy=ent, entropy_coef=alg.entropy_coef,
            )
            if not torch.isfinite(loss):
                finite = False
                if self.streamed:
                    self._zero_backward(lp, mb)
                    continue
                break
            loss.backward()
            if self.critic is not None:
                # The critic after the policy's backward pass: their activations are never held at once.
                values = self.critic(mb.input_ids, mb.attention_mask, mb.t, packed=self.packed)
                vloss, vm = value_objective(values, mb.values, mb.returns, mb.loss_mask, num_tokens=num_tokens,
                                            value_clip=alg.critic.clip_range)
                if not torch.isfinite(vloss):
                    finite = False
                    if self.streamed:
                        (values.sum() * 0.0).backward()
                        continue
                    break
                vloss.backward()
                loss = loss.detach() + vloss.detach()
                m.update(vm)
            step_loss = step_loss + loss.detach()
            weight = m.pop("num_valid_tokens")
            if mb.old_logprobs is None:
                # this forward's log-probs are pi_old's: the mismatch over the tokens the IS metrics count
                seen = mb.is_mask if mb.is_mask is not None else mb.loss_mask
                diff = lp.detach() - mb.sampler_logprobs
                acc.add("logprob_mismatch", diff.abs(), seen)
                self._mismatch.append(diff.abs()[seen].float().cpu())
                ratio = torch.exp(diff.double())[seen]
                acc.add_weighted("_is_ratio", ratio.mean() if ratio.numel() else 0.0, ratio.numel())
                acc.add_weighted("_is_ratio_sq", ratio.square().mean() if ratio.numel() else 0.0, ratio.numel())
            for k in ("policy_loss", "value_loss"):  # partial sums of the mini-batch's loss
                if k in m:
                    step_parts[k] = step_parts.get(k, 0.0) + float(m.pop(k))
            for k, val in m.items():
                acc.add_weighted(k, val, weight)
        b.cov_selected = None
        grad_norm = None
        # (modules sharded per layer are left to FSDP2: it summed their gradients into the shards in the backward)
        sharded_trained = [m for m in (self.model, self.critic) if m is not None and m in self.sharded
                           and not self.topo.streams(m)]
        if self.topo.distributed:
            # Every rank must agree to step (or to skip); then the gradients of all ranks are summed.
            finite = self.topo.all_reduce_max(0.0 if finite else 1.0) == 0.0
            if finite:
                trained = [m for m in (self.model, self.critic) if m is not None and not self.topo.streams(m)]
                for module in trained:
                    if module in self.sharded:
                        self.topo.sum_gradients_into_shards_(module)  # leaves it resharded
                    else:
                        self.topo.sum_gradients_([p for p in module.parameters() if p.requires_grad])
                totals = torch.tensor([float(step_loss), *step_parts.values()], dtype=torch.float64)
                self.topo.all_reduce_sum_(totals)
                step_loss = totals[0]
                step_parts = dict(zip(step_parts, totals[1:].tolist()))
        if finite:
            params = [p for p in self.model.parameters() if p.grad is not None]
            max_norm = cfg.optim.max_grad_norm or float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            if hasattr(grad_norm, "full_tensor"):  # FSDP2: the norm of the sharded gradients
                grad_norm = grad_norm.full_tensor()
            if self.critic is not None:
                torch.nn.utils.clip_grad_norm_(self.critic.parameters(), max_norm)
            finite = bool(torch.isfinite(grad_norm))
        if not finite:
            # A non-finite loss or gradient: skip this optimizer step rather than corrupt the weights.
            if sharded_trained:
                self.topo.unshard(sharded_trained)  # they may have been resharded to take their gradients
            self.optimizer.zero_grad(set_to_none=True)
            if self.critic_optimizer is not None:
                self.critic_optimizer.zero_grad(set_to_none=True)
            self.nonfinite_steps += 1
            self.bad_steps_in_row += 1
            if self.bad_steps_in_row >= cfg.train.max_bad_steps:
                raise FloatingPointError(
                    f"{self.bad_steps_in_row} optimizer steps in a row had a non-finite loss or gradient; stopping. "
                    "Lower optim.lr, set optim.max_grad_norm, or check the rewards"
                )
            return
        self.bad_steps_in_row = 0
        self.policy_version += 1
        acc.add_scalar("loss", step_loss)
        for k, v in step_parts.items():
            acc.add_scalar(k, v)
        acc.add_scalar("grad_norm", grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        if self.critic_optimizer is not None:
            self.critic_optimizer.step()
            self.critic_scheduler.step()
        if sharded_trained:
            self.topo.unshard(sharded_trained)  # the updated shards, gathered again for the rest of the step

    def _is_weights_of(self, old_logprobs: Tensor, mb: TrainBatch, acc: MetricSums) -> Tensor:
        """The IS weights of a micro-batch whose own forward gives pi_old (an on-policy update), with their
        metrics added to `acc` weighted by its valid tokens (the maximum as a maximum), as the batch-wide
        computation in `update` would give them."""
        c = self.cfg.algorithm.is_correction
        weights, metrics = importance_weights(old_logprobs, mb.sampler_logprobs, mb.is_mask, level=c.level,
                                              mode=c.mode, cap=c.cap)
        valid = float(mb.is_mask.sum())
        for k, v in metrics.items():
            if k == "is_weight_max":
                if valid:
                    acc.add_max(k, v)
            elif k != "logprob_mismatch":  # added with the other mismatch figures after the backward
                acc.add_weighted(k, v, valid)
        return weights

    @torch.no_grad()
    def _covariance_selection(self, b: TrainBatch, rows: list[int], loss_params: dict, seed: int) -> Tensor:
        """Clip-Cov / KL-Cov's selected tokens over the mini-batch `rows`, as a [N, T] mask of the batch."""
        # routed like the update forwards that use the selection (r2 / r3 replay the recorded experts)
        around = self.routing.replay_forward if self.routing is not None else None
        current = self._logprobs_no_grad(self.model, b, rows, around=around)[rows]  # summed over ranks
        old = b.old_logprobs[rows] if b.old_logprobs is not None else current
        selected = covariance_selection(
            self.cfg.algorithm.loss.name, logprobs=current, old_logprobs=old, advantages=b.advantages[rows],
            loss_mask=b.loss_mask[rows], generator=torch.Generator(device=current.device).manual_seed(seed),
            **loss_params,
        )
        full = torch.zeros_like(b.loss_mask)
        full[rows] = selected
        return full

    def _my_rows(self, b: TrainBatch, rows=None) -> list[int]:
        rows = range(b.loss_mask.shape[0]) if rows is None else rows
        return [r for r in rows if self.own is None or r in self.own] if self.topo.distributed else list(rows)

    def _aligned(self, b: TrainBatch, mbs: list[TrainBatch]) -> list[tuple[TrainBatch, bool]]:
        """(micro-batch, real) pairs: this rank's micro-batches, and under per-layer FSDP as many fillers (one row
        of the batch, its result unused) as make every rank run the same number of forwards and backwards."""
        pairs = [(mb, True) for mb in mbs]
        if self.streamed:
            most = int(self.topo.all_reduce_max(float(len(mbs))))
            if len(mbs) < most:
                pairs += [(b.micro_batches([0], 1)[0], False)] * (most - len(mbs))
        return pairs

    def _zero_backward(self, lp: Tensor, mb: TrainBatch) -> None:
        """A backward pass that adds nothing (per-layer FSDP's collectives of a micro-batch that must not count)."""
        (lp.sum() * 0.0).backward()
        if self.critic is not None:
            (self.critic(mb.input_ids, mb.attention_mask, mb.t, packed=self.packed).sum() * 0.0).backward()

    @torch.no_grad()
    def _logprobs_no_grad(self, model, b: TrainBatch, rows=None, everywhere: bool = False, around=None) -> Tensor:
        """Log-probs [N, T] of `rows` (default all) of the batch; each rank computes its own rows and the
        ranks' results are summed, so every rank holds them all. everywhere: each rank computes all.
        around(mb): a context around each micro-batch's forward (routing replay's record or replay)."""
        out = torch.zeros_like(b.sampler_logprobs)
        mine = list(range(b.loss_mask.shape[0])) if everywhere else self._my_rows(b, rows)
        for mb, real in self._aligned(b, b.micro_batches(mine, self.cfg.train.micro_batch_size) if mine else []):
            with around(mb) if around is not None and real else contextlib.nullcontext():
                lp, _ = response_logprobs(model, mb.input_ids, mb.attention_mask, mb.t, packed=self.packed,
                                          **self._filter())
            if real:
                out[mb.rows, : mb.t] = lp
        return out if everywhere else self.topo.all_reduce_sum_(out)

    @torch.no_grad()
    def _values_no_grad(self, b: TrainBatch) -> Tensor:
        out = torch.zeros_like(b.sampler_logprobs)
        mine = self._my_rows(b)
        for mb, real in self._aligned(b, b.micro_batches(mine, self.cfg.train.micro_batch_size) if mine else []):
            values = self.critic(mb.input_ids, mb.attention_mask, mb.t, packed=self.packed)
            if real:
                out[mb.rows, : mb.t] = values
        self.topo.all_reduce_sum_(out)
        return torch.where(b.loss_mask, out, torch.zeros_like(out))

    def _merge_metrics(self, acc: MetricSums) -> MetricSums:
        """The ranks' metric sums and weights, added (the same keys everywhere afterwards)."""
        if not self.topo.distributed:
            return acc
        merged = MetricSums()
        for sums, weights, maxima in self.topo.all_gather_objects((acc.sums, acc.weights, acc.maxima)):
            for k, v in sums.items():
                merged.sums[k] = merged.sums.get(k, 0.0) + v
                merged.weights[k] = merged.weights.get(k, 0.0) + weights[k]
            for k, v in maxima.items():
                merged.add_max(k, v)
        return merged

    def greedy_baseline(self, scored: Scored, step: int) -> Tensor:
        """ReMax: each prompt's greedy response's return, broadcast to its samples [N].

        The greedy response is shaped exactly like the samples, so the baseline subtracts like from
        like: the same overlong penalty, and with KL in the reward the same -coef * sum_t kl_t of the
        greedy response (old policy against the reference, under the sampler's filter).
        """
        cfg, alg = self.cfg, self.cfg.algorithm
        greedy_scored = self.generate_shared(list(scored.examples), derive_seed(cfg.seed, GREEDY_BASELINE, step), n=1,
                                             greedy=True)
        greedy = greedy_scored.rollout
        per_prompt = greedy_scored.rewards.clone()  # [P]
        device = next(self.model.parameters()).device
        gb = TrainBatch.from_rollout(greedy, self.pad_id, device)
        per_prompt = per_prompt.to(device)
        if alg.overlong.enabled:
            per_prompt = per_prompt + overlong_penalty(gb.loss_mask.sum(-1), cfg.rollout.max_new_tokens, alg.overlong.cache_len)
        if self.ref_model is not None and self.kl_coef > 0 and alg.kl.placement == "reward":
            # every rank computes these few greedy rows itself (not the step's batch: no shares)
            old = self._logprobs_no_grad(self.model, gb, everywhere=True)
            with reference_mode(self.lora):
                ref = self._logprobs_no_grad(self.ref_model, gb, everywhere=True)
            kl = kl_divergence(old, ref, alg.kl.estimator, loss_mask=gb.loss_mask)
            per_prompt = per_prompt - self.kl_coef * masked_sum(kl, gb.loss_mask, dim=1)
        return per_prompt[torch.tensor(scored.rollout.prompt_index, device=device)]
