"""The RL trainer: one step is collect -> plan -> prepare -> for each epoch and mini-batch: optimize -> sync -> metrics.

Every algorithmic choice goes through a core registry (advantage estimator, policy loss, aggregation, KL
estimator), and what one micro-batch minimises is `rlvr.core.objective.rl_objective`, a pure function of
tensors. The modules of one step, in the order it runs them:
- rlvr.train.collect: rollouts and their rewards (dynamic sampling; ReMax's greedy rollouts);
- rlvr.train.plan: which passes the step runs (a frozen StepPlan from a pure function);
- rlvr.train.prepare: the old / reference / value passes, shaped rewards, advantages, smoothing, IS weights;
- rlvr.train.optimize: the optimizer steps over micro-batches, gradients summed over ranks;
- rlvr.train.weights: the weight push to the engine and its probe;
- rlvr.train.step_metrics: the step's metrics.
Every trainer log-prob (old, current, reference, and the entropy that feeds the loss) is evaluated under the
sampler's temperature, top-k and top-p (`rlvr.core.filtering`), so on-policy ratios and IS weights are 1 to
float rounding whatever the filter. Several optimizer steps per batch (train.epochs x train.mini_batches) draw
a fresh partition into mini-batches each epoch; every random stream's seed comes from
`rlvr.train.seeds.derive_seed`.
"""

from __future__ import annotations

import time
from typing import Any

from rlvr.core.advantages import ADVANTAGE_ESTIMATORS
from rlvr.core.kl import adaptive_kl_coef
from rlvr.train.batch import MetricSums, minibatch_rows
from rlvr.train.collect import Collector
from rlvr.train.distributed import Topology
from rlvr.train.memory import freed_memory_returned
from rlvr.train.optim import Optimizers
from rlvr.train.optimize import Updater
from rlvr.train.passes import Forwards
from rlvr.train.pipeline import AsyncCollector
from rlvr.train.plan import StepPlan, plan_step
from rlvr.train.prepare import Models, greedy_baseline, prepare
from rlvr.train.routing import RoutingReplay
from rlvr.train.seeds import COVARIANCE, MINIBATCH, derive_seed
from rlvr.train.step_metrics import merged, rollout_metrics, update_metrics
from rlvr.train.weights import WeightSync


class NoLearningSignal(RuntimeError):
    """Too many steps in a row with nothing to learn from: no sample earned any reward."""

    stopped = True


class Trainer:
    """The models and the parts of one RL step; `step(stream, step)` runs one and returns its metrics."""

    def __init__(self, cfg, models: Models, *, topology: Topology | None = None, log=print):
        self.cfg = cfg
        self.models = models
        self.topo = topology or Topology()
        self.log = log
        self.kl_coef = cfg.algorithm.kl.coef
        self.policy_version = 0
        """The engine contract: the policy's version counts optimizer steps; each push carries it."""
        self.defer_is_weights = True
        """On an exactly on-policy update, take the IS weights from each micro-batch's own forward instead of a
        separate pi_old pass (the same numbers; False runs that pass, which the tests compare against)."""
        self.no_signal_steps = 0
        """Steps with nothing to train on: dynamic sampling kept no group whose rewards differ."""
        self.no_signal_in_row = 0
        self.last_rollouts = None
        """Every sample of the last step, scored (what samples.jsonl logs)."""
        self.sharded = self._sharded()
        streamed = any(self.topo.streams(m) for m in self.sharded)
        self.forwards = Forwards(self.topo, micro_batch_size=cfg.train.micro_batch_size,
                                 packed=None if cfg.train.packed else False, lockstep=streamed,
                                 rollout_cfg=cfg.rollout, layer_policy_cfg=cfg.algorithm.layer_policy)
        self.optimizers = Optimizers(cfg, models.policy, models.critic)
        policy = models.policy
        gathered = [policy] if getattr(models.engine, "model", None) is policy and policy in self.sharded else []
        self.sync = WeightSync(cfg, models, self.topo, sharded=self.sharded)
        if cfg.rollout.max_staleness >= 1:  # collection runs ahead of training, in a thread (rlvr.train.pipeline)
            # (its collectives, under torchrun, on a process group of their own)
            collector = Collector(cfg, models, self.topo.with_own_group(), log=log)
            self.collector = AsyncCollector(
                collector, self.sync, cfg.rollout.max_staleness, last_step=cfg.train.steps,
                baseline_rollout="baseline_rewards" in ADVANTAGE_ESTIMATORS.needs(cfg.algorithm.advantage.name),
                timeout_s=cfg.rollout.worker_timeout_s, log=log)
        else:
            self.collector = Collector(cfg, models, self.topo, gathered_for_engine=gathered, log=log)
        with self.topo.full_params(self.sharded):
            self.push_weights(0)
        if cfg.algorithm.layer_policy is not None:
            from rlvr.models.layers import check_layer

            check_layer(policy, cfg.algorithm.layer_policy.layer)
        self.routing = RoutingReplay.build(policy, cfg.algorithm.routing_replay, models.engine)
        """Mixture-of-experts models: the routes recorded, replayed and compared (rlvr.train.routing)."""
        if self.routing is not None:
            self.forwards.packed = False  # routes are recorded in, and replayed into, the padded layout
        self.updater = Updater(cfg, models, self.optimizers, self.forwards, routing=self.routing, sharded=self.sharded)

    def _sharded(self) -> list:
        """FSDP2: the sharded modules, gathered for each step (Topology.full_params)."""
        m = self.models
        sharded = [x for x in (m.policy, m.critic) if self.topo.fsdp_units([x])]
        if m.reference is not None and m.reference is not m.policy and self.topo.fsdp_units([m.reference]):
            sharded.append(m.reference)
        return sharded

    @property
    def asynchronous(self) -> bool:
        return isinstance(self.collector, AsyncCollector)

    def push_weights(self, step: int | None = None) -> None:
        """The policy's weights after step `step` to the engine: pushed now, or, when collection runs ahead,
        published for the steps whose batches they sample (which needs `step`)."""
        if self.asynchronous:
            if step is None:
                raise ValueError("push_weights needs the step when collection runs ahead (rollout.max_staleness >= 1)")
            self.collector.publish(step, self.policy_version)
        else:
            self.sync.push(self.policy_version)

    # --- one step ------------------------------------------------------------------------------------------

    def step(self, stream, step: int) -> dict[str, Any]:
        """Collect, plan, prepare, optimize, sync; the step's metrics."""
        # train.fsdp_reshard=step: the whole model gathered for the whole step; per layer: by the units themselves
        with self.topo.full_params([] if self.forwards.lockstep else self.sharded):
            t0 = time.perf_counter()
            batch, everything, gen = self.collector.collect(stream, step)
            self.last_rollouts = everything
            metrics = rollout_metrics(everything, self.cfg, self.models.tokenizer)
            errors, timeouts = self.collector.error_counts()
            metrics.update(reward_errors=float(errors), reward_timeouts=float(timeouts), **gen)
            t_train = time.perf_counter()
            if batch is None:
                metrics.update(self._no_signal(everything, step))
                if self.asynchronous:
                    self.push_weights(step)  # the same weights, for the batch that waits on them
            else:
                self.no_signal_in_row = 0
                with freed_memory_returned(self.cfg.train.release_memory):
                    metrics.update(self.update(batch, step))
            metrics["train_time_s"] = time.perf_counter() - t_train
            metrics["step_time_s"] = time.perf_counter() - t0
            metrics.update(lr=self.optimizers.lr, kl_coef=self.kl_coef, nonfinite_steps=float(self.updater.nonfinite_steps),
                           no_signal_steps=float(self.no_signal_steps))
            return metrics

    def plan(self, batch, step: int) -> StepPlan:
        return plan_step(self.cfg, step, stale=batch.policy_version != self.policy_version,
                         reference=self.models.reference is not None and self.kl_coef > 0,
                         replays_routes=self.routing is not None and self.routing.replays,
                         defer_is_weights=self.defer_is_weights)

    def update(self, batch, step: int) -> dict[str, Any]:
        """The update on one scored batch: prepare it, then train.epochs x train.mini_batches optimizer steps."""
        cfg = self.cfg
        plan = self.plan(batch, step)
        phase = self._enter_layer_phase(plan, step)
        acc = MetricSums()
        prepared = prepare(cfg, plan, batch, models=self.models, forwards=self.forwards, routing=self.routing,
                           collector=self.collector, kl_coef=self.kl_coef, acc=acc, step=step)
        b = prepared.batch
        self.updater.mismatch = []
        for epoch in range(cfg.train.epochs):
            # A fresh partition every epoch (cleanrl, verl), from a seed no other stream shares.
            seed = derive_seed(cfg.seed, MINIBATCH, step, epoch)
            for index, rows in enumerate(minibatch_rows(batch.prompt_index, cfg.train.mini_batches, seed)):
                stepped = self.updater.step(b, rows, acc, kl_coef=self.kl_coef, covariance_selection=plan.covariance_selection,
                                            cov_seed=derive_seed(cfg.seed, COVARIANCE, step, epoch, index))
                self.policy_version += stepped
        means = merged(acc, self.topo).means()
        b.is_mask = None
        if self.routing is not None:
            means = self.routing.finish(means)
        out = update_metrics(prepared, plan, means, self.updater.mismatch, self.topo, phase)
        if cfg.algorithm.kl.adaptive and out["kl"] is not None:
            k = cfg.algorithm.kl
            self.kl_coef = adaptive_kl_coef(self.kl_coef, out["kl"], k.target, k.horizon, b.loss_mask.shape[0])
        self.forwards.layer = None  # outside an update (evaluation, probes) the policy is the full model
        self.push_weights(step)
        # (collecting ahead: the probe of the weights that sampled this batch, checked when the engine loaded them)
        probe = self.collector.probe_diff if self.asynchronous else self.sync.max_diff
        out.update(policy_version=float(self.policy_version), weight_sync_max_diff=probe)
        if cfg.algorithm.mask_truncated:
            out["masked_truncated_frac"] = float(1 - b.loss_mask.any(-1).float().mean())
        return out

    def greedy_baseline(self, batch, step: int):
        """ReMax's baseline for `batch` [N] (rlvr.train.prepare.greedy_baseline), as step `step` computes it."""
        return greedy_baseline(self.cfg, self.plan(batch, step), batch, self.collector.greedy(batch, step),
                               models=self.models, forwards=self.forwards, kl_coef=self.kl_coef)

    def _enter_layer_phase(self, plan: StepPlan, step: int) -> dict[str, float]:
        """Which policy this step's objective uses (algorithm.layer_policy); says so at the switch."""
        lp = self.cfg.algorithm.layer_policy
        self.forwards.layer = plan.layer
        if lp is None:
            return {}
        if step == lp.steps + 1:
            self.log(f"step {step}: the layer-policy phase is over (layer {lp.layer} for {lp.steps} steps); "
                     "training the full policy from now on")
        return {"layer_policy_active": float(plan.layer is not None)}

    def _no_signal(self, everything, step: int) -> dict[str, float]:
        """Dynamic sampling found no group with any spread: nothing to learn from this step."""
        self.no_signal_steps += 1
        # Only steps in which no sample earned any reward count towards stopping (a task too hard for the model,
        # or a broken reward); a policy that answers alike with some reward has converged.
        nothing = float(everything.reward_tensor().max()) <= 0.0
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
        return {"kept_groups": 0.0, "no_signal_step": 1.0}

    # --- checkpoints ---------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The trainer's counters, policy version, KL controller, schedules and the critic's weights (the
        optimizer moments are written apart, `optimizers_by_name`, with torch.distributed.checkpoint)."""
        state = {
            **self.optimizers.state_dict(),
            "kl_coef": self.kl_coef,
            "nonfinite_steps": self.updater.nonfinite_steps,
            "no_signal_steps": self.no_signal_steps,
            "no_signal_in_row": self.no_signal_in_row,
            **self.collector.state_dict(),
            "policy_version": self.policy_version,
            "optimizer_format": "dcp" if self.cfg.checkpoint.optimizer else None,
        }
        if self.models.critic is not None:
            state["critic"] = self.topo.module_state(self.models.critic)  # a collective with FSDP
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`'s figures (and the critic's weights), then push the weights under the restored
        policy version."""
        self.optimizers.load_state_dict(state)
        self.kl_coef = state["kl_coef"]
        self.updater.nonfinite_steps = state.get("nonfinite_steps", state.get("skipped_steps", 0))
        self.no_signal_steps = state.get("no_signal_steps", 0)
        self.no_signal_in_row = state.get("no_signal_in_row", 0)
        self.collector.load_state_dict(state)
        self.policy_version = int(state.get("policy_version", 0))
        with self.topo.full_params(self.sharded):
            self.push_weights(int(state.get("step", 0)))
        if self.models.critic is not None:
            self.topo.load_module_state(self.models.critic, state["critic"])

    def close(self) -> None:
        """Stop collecting ahead (the run closes the engine itself)."""
        if self.asynchronous:
            self.collector.close()

    def optimizers_by_name(self) -> dict[str, tuple[Any, Any]]:
        """The optimizers a checkpoint holds (checkpoint.optimizer), by name, each with the module it steps."""
        out = {"policy": (self.models.policy, self.optimizers.policy)}
        if self.models.critic is not None:
            out["critic"] = (self.models.critic, self.optimizers.critic)
        return out
