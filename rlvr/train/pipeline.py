"""Asynchronous collection with bounded staleness (rollout.max_staleness = K >= 1; docs/async.md).

A background thread runs the step's ordinary collection (rlvr.train.collect.Collector: sampling, scoring,
dynamic sampling, ReMax's greedy rollouts) against an engine in a rollout worker process, while the trainer
trains on earlier batches. Deterministic: the batch of step t is always sampled with the weights published
after step w(t) = max(0, t - 1 - K), with the seeds of step t, in step order; so two runs are identical,
and no batch is trained on more than K updates after the weights that sampled it (staleness t - 1 - w(t)
= min(t - 1, K)). The thread waits for those weights when it is ahead; the trainer waits for the batch when
the thread is behind. Each weight push is checked on the engine as in the synchronous case: the trainer's
probe log-probs are taken when it publishes the weights, the engine's when it loads them.

A checkpoint after step t (before the run's last) holds the batches of steps t+1 .. t+K already sampled (they were sampled with
weights older than the checkpoint's) and the data position and collection counters after the last of them,
so a resumed run trains on exactly the batches the uninterrupted one would have. A run extended beyond its
last step (a larger train.steps on --resume) no longer has the older weights: its next K batches are sampled
with the checkpoint's, and it says so.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from rlvr.rollout.base import RolloutBatch


@dataclass
class Published:
    """The policy's weights after one step, as the engine will load them."""

    step: int
    version: int
    weights: dict[str, Any]
    probe: Any
    """The trainer's log-probs of the sync probe under these weights."""


@dataclass
class Collected:
    """One step's collection, made ahead of training."""

    step: int
    weights_step: int
    batch: RolloutBatch | None
    everything: RolloutBatch
    stats: dict[str, float]
    greedy: RolloutBatch | None
    counters: dict[str, Any]
    """The collector's counters (reward errors, dynamic sampling) after this step's collection."""
    data: dict[str, int]
    """The prompt stream's position after this step's collection."""
    probe_diff: float
    generator_wait_time_s: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


class AsyncCollector:
    """Collects each step's batch ahead of training, on weights K updates old at most (see the module)."""

    def __init__(self, collector, sync, max_staleness: int, *, last_step: int, baseline_rollout: bool,
                 timeout_s: float = 600.0, log=print):
        if max_staleness < 1:
            raise ValueError(f"AsyncCollector is for max_staleness >= 1 (got {max_staleness})")
        self.collector = collector
        self.sync = sync
        self.k = int(max_staleness)
        self.last_step = int(last_step)
        self.baseline_rollout = baseline_rollout
        self.timeout_s = float(timeout_s)
        self._cond = threading.Condition()
        self._published: dict[int, Published] = {}
        self._ready: dict[int, Collected] = {}
        self._next_step: int | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._closing = False
        self._stream = None
        self._loaded: int | None = None
        """The step whose weights the engine holds."""
        self._taken: Collected | None = None
        """The last step handed to the trainer."""
        self._floor = 0
        """The oldest weights this process has: a resumed run's checkpoint step."""
        self.log = log

    def weights_step(self, step: int) -> int:
        """The step after which the weights that sample step `step`'s batch were published."""
        return max(0, step - 1 - self.k)

    # --- the trainer's side ----------------------------------------------------------------------------------

    def publish(self, step: int, version: int) -> None:
        """The policy's weights after `step` (0: the initial ones), under policy version `version`."""
        weights = {name: t.detach().to("cpu", copy=True) for name, t in self.sync.model.state_dict().items()}
        published = Published(step, int(version), weights, self.sync.trainer_probe())
        with self._cond:
            self._published[step] = published
            self._cond.notify_all()

    def collect(self, stream, step: int) -> tuple[RolloutBatch | None, RolloutBatch, dict[str, float]]:
        """Step `step`'s batch (as rlvr.train.collect.Collector.collect returns it), waiting for it if need be."""
        if self._thread is None:
            self._start(stream, step)
        t0 = time.perf_counter()
        self._wait(lambda: step in self._ready, f"the batch of step {step}")
        with self._cond:
            item = self._ready.pop(step)
        self._taken = item
        wait = time.perf_counter() - t0
        stats = dict(item.stats)
        stats.update(staleness=float(step - 1 - item.weights_step), sampled_after_step=float(item.weights_step),
                     trainer_wait_time_s=wait, generator_wait_time_s=item.generator_wait_time_s)
        return item.batch, item.everything, stats

    @property
    def probe_diff(self) -> float:
        """The sync probe's difference when the engine loaded the weights that sampled the last batch handed out."""
        return self._taken.probe_diff if self._taken is not None else 0.0

    def greedy(self, batch: RolloutBatch, step: int) -> RolloutBatch:
        """ReMax's greedy rollouts of step `step`, sampled with the same weights as its batch."""
        if self._taken is None or self._taken.step != step or self._taken.greedy is None:
            raise RuntimeError(f"no greedy rollouts were collected for step {step}")
        return self._taken.greedy

    def error_counts(self) -> tuple[int, int]:
        """(failed reward calls, timed out ones) over the run, as of the last batch handed out."""
        counters = self._taken.counters if self._taken is not None else self.collector.state_dict()
        return int(counters["reward_errors"]), int(counters["reward_timeouts"])

    # --- checkpoints -----------------------------------------------------------------------------------------

    def _pending(self) -> list[Collected]:
        """The batches of the steps after the last one trained that the run will train on, up to K of them:
        sampled with weights the checkpoint no longer holds, so they are kept whole."""
        done = self._taken.step if self._taken is not None else (self._next_step or 1) - 1
        wanted = list(range(done + 1, min(done + self.k, self.last_step) + 1))
        if self._thread is not None:
            self._wait(lambda: all(s in self._ready for s in wanted), f"the batches of steps {wanted}")
        with self._cond:
            return [self._ready[s] for s in wanted if s in self._ready]

    def _last_collected(self) -> Collected | None:
        """The last collection a checkpoint covers: that of the last pending batch, else of the last one trained."""
        pending = self._pending()
        return pending[-1] if pending else self._taken

    def state_dict(self) -> dict[str, Any]:
        last = self._last_collected()
        counters = last.counters if last is not None else self.collector.state_dict()
        return {**counters, "async_pending": self._pending()}

    def stream_state(self, stream) -> dict[str, int]:
        last = self._last_collected()
        return dict(last.data) if last is not None else stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Counters and the already-sampled batches of a checkpoint; collection resumes after the last of them."""
        self.collector.load_state_dict(state)
        self._ready = {item.step: item for item in state.get("async_pending", [])}
        self._floor = int(state.get("step", 0))
        with self._cond:
            self._published.clear()  # (the initial publication held the checkpoint's weights as step 0's)

    # --- the collecting thread -------------------------------------------------------------------------------

    def _start(self, stream, step: int) -> None:
        self._stream = stream
        self._next_step = max([step - 1, *self._ready]) + 1
        self._thread = threading.Thread(target=self._run, name="rlvr-collect", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            step = self._next_step
            while step <= self.last_step:
                scheduled = self.weights_step(step)
                need = max(scheduled, self._floor)
                if need > scheduled:
                    self.log(f"step {step}: sampled with the weights after step {need} (the checkpoint's), not after "
                             f"step {scheduled}, which this resumed run no longer has; a run resumed "
                             "beyond its last step is not identical to an uninterrupted one")
                t0 = time.perf_counter()
                self._wait(lambda need=need: need in self._published, f"the weights after step {need}",
                           thread=True)
                if self._closing:
                    return
                with self._cond:
                    published = self._published[need]
                    for old in [p for p in self._published if p < need]:
                        del self._published[old]
                diff = self._load(published)
                waited = time.perf_counter() - t0
                batch, everything, stats = self.collector.collect(self._stream, step)
                greedy = self.collector.greedy(batch, step) if self.baseline_rollout and batch is not None else None
                item = Collected(step, need, batch, everything, stats, greedy, self.collector.state_dict(),
                                 self._stream.state_dict(), diff, generator_wait_time_s=waited)
                with self._cond:
                    self._ready[step] = item
                    self._cond.notify_all()
                step += 1
        except BaseException as exc:  # noqa: BLE001 (handed to the trainer, which raises it)
            with self._cond:
                self._error = exc
                self._cond.notify_all()

    def _load(self, published: Published) -> float:
        """Load `published` into the engine (once) and check it on the probe; the probe's difference."""
        if self._loaded == published.step:
            return self.sync.max_diff
        self.sync.engine.update_weights(published.weights, published.version)
        self._loaded = published.step
        return self.sync.verify(published.version, published.weights, trainer_probe=published.probe)

    def _wait(self, ready, what: str, *, thread: bool = False):
        """Wait until `ready()`; raise the collecting thread's error (on the trainer's side), or after the
        timeout."""
        deadline = time.monotonic() + self.timeout_s
        with self._cond:
            while not ready():
                if thread and self._closing:
                    return
                if not thread and self._error is not None:
                    raise RuntimeError(f"asynchronous collection failed: {self._error}") from self._error
                left = deadline - time.monotonic()
                if left <= 0 and not thread:
                    raise RuntimeError(f"waited {self.timeout_s:g}s for {what} (rollout.worker_timeout_s); the "
                                       "rollout worker is stuck")
                self._cond.wait(timeout=max(min(left, 1.0), 0.05) if not thread else 1.0)

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
