"""Collecting a step's rollouts: sampling, scoring, DAPO's dynamic sampling, and ReMax's greedy rollouts.

Every rank generates a contiguous share of the prompts and all ranks end up holding the whole scored batch,
in prompt order, as one process would have generated it (each sample keeps its random stream:
`SamplingParams.stream_offset`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from rlvr.core.shaping import filter_groups
from rlvr.eval.scoring import RewardErrors, score_rollouts
from rlvr.rollout import SamplingParams
from rlvr.rollout.base import RolloutBatch
from rlvr.train.seeds import GREEDY_BASELINE, ROLLOUT, derive_seed


class Collector:
    """Generates and scores the samples of each step; keeps dynamic sampling's running keep rate and the count of
    failed reward calls (both part of a checkpoint)."""

    def __init__(self, cfg, models, topo, *, gathered_for_engine=(), log=print):
        self.cfg = cfg
        self.models = models
        """The trainer's models (rlvr.train.prepare.Models): the task, tokenizer and engine are read from it."""
        self.topo = topo
        self.gathered_for_engine = list(gathered_for_engine)
        """Modules to gather around generate: an FSDP-sharded policy that the engine runs itself (hf)."""
        self.reward_errors = RewardErrors(log)
        self.ds_seen = 0
        """Dynamic sampling over the whole run: groups generated, and groups kept."""
        self.ds_kept = 0

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
        texts = [self.models.task.prompt(ex, self.models.tokenizer) for ex in examples]
        return [self.models.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]

    def score(self, examples: list[Any], batch: RolloutBatch) -> RolloutBatch:
        """`batch` scored against `examples`; a reward that fails gives its sample 0 and is counted."""
        return score_rollouts(batch, examples, self.models.task, self.models.tokenizer,
                              on_error=lambda exc, row, example: self.reward_errors.record(exc))

    def generate(self, examples: list[Any], seed: int, *, n: int | None = None, greedy: bool = False) -> RolloutBatch:
        """Generate and score `examples` (one group each), every rank its share; every rank returns the whole batch."""
        share = self.topo.shard(len(examples))  # possibly uneven (dynamic sampling's rounds), possibly empty
        mine = [examples[i] for i in share]
        group = self.cfg.rollout.group_size if n is None else n
        params = self.sampling_params(seed, n=n, greedy=greedy, stream_offset=share.start * group)
        with self.topo.full_params(self.gathered_for_engine):
            batch = self.models.engine.generate(self.prompt_ids(mine), params)
        scored = self.score(mine, batch)
        if not self.topo.distributed:
            return scored
        parts = self.topo.all_gather_objects(scored)
        merged = RolloutBatch.concat(parts)
        merged.gen_time_s = max(p.gen_time_s for p in parts)  # the ranks ran side by side
        return merged

    def collect(self, stream, step: int) -> tuple[RolloutBatch | None, RolloutBatch, dict[str, float]]:
        """(the batch to train on, every sample generated, generation figures) for one step.

        Dynamic sampling: each round asks for the groups still missing divided by the keep rate observed so far
        in the run (capped at `max_oversample` times the shortfall), keeps the groups whose rewards differ, and
        stops once the batch is full; kept groups beyond `prompts_per_step` are dropped (DAPO's
        over-sample-then-truncate, as verl does). After `max_rounds` the step trains on what it has (None:
        nothing).
        """
        want = self.cfg.rollout.prompts_per_step
        ds = self.cfg.algorithm.dynamic_sampling
        kept: list[RolloutBatch] = []
        raw: list[RolloutBatch] = []
        kept_groups = 0
        for rnd in range(ds.max_rounds if ds.enabled else 1):
            ask = want
            if ds.enabled:
                short = want - kept_groups
                rate = self.ds_kept / self.ds_seen if self.ds_seen else 1.0
                ask = min(math.ceil(short / max(rate, 1e-9)), math.ceil(short * ds.max_oversample))
            examples = stream.take(ask)
            scored = self.generate(examples, derive_seed(self.cfg.seed, ROLLOUT, step, rnd))
            raw.append(scored)
            if not ds.enabled:
                kept.append(scored)
                break
            keep = filter_groups(scored.reward_tensor(), torch.tensor(scored.prompt_index))
            kept_prompts = sorted({scored.prompt_index[i] for i in range(len(keep)) if keep[i]})
            self.ds_seen += len(examples)
            self.ds_kept += len(kept_prompts)
            kept_prompts = kept_prompts[: want - kept_groups]
            if kept_prompts:
                kept.append(scored.select_groups(kept_prompts))
                kept_groups += len(kept_prompts)
            if kept_groups >= want:
                break
        gen_time = sum(r.gen_time_s for r in raw)
        stats = {"gen_time_s": gen_time, "gen_tokens_per_s": sum(r.num_generated_tokens for r in raw) / max(gen_time, 1e-9),
                 "gen_rounds": float(len(raw))}
        if ds.enabled:
            stats["keep_rate"] = self.ds_kept / max(self.ds_seen, 1)
        return (RolloutBatch.concat(kept) if kept else None), RolloutBatch.concat(raw), stats

    def greedy(self, batch: RolloutBatch, step: int) -> RolloutBatch:
        """ReMax's greedy response to each prompt of `batch`, scored (one sample per prompt)."""
        return self.generate(list(batch.examples), derive_seed(self.cfg.seed, GREEDY_BASELINE, step), n=1, greedy=True)

    def error_counts(self) -> tuple[int, int]:
        """(failed reward calls, timed out ones) over the run."""
        return self.reward_errors.count, self.reward_errors.timeouts

    def stream_state(self, stream) -> dict[str, int]:
        """The data position a checkpoint records (the stream's own: nothing is collected ahead)."""
        return stream.state_dict()

    def state_dict(self) -> dict[str, Any]:
        return {**self.reward_errors.state_dict(), "dynamic_sampling": {"seen": self.ds_seen, "kept": self.ds_kept}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reward_errors.load_state_dict(state)
        ds = state.get("dynamic_sampling", {})
        self.ds_seen, self.ds_kept = int(ds.get("seen", 0)), int(ds.get("kept", 0))
