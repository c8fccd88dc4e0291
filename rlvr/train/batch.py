"""The tensors of one RL update (TrainBatch), its mini- and micro-batches, and the sums its metrics are made of."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from rlvr.core.masked import masked_mean

PER_TOKEN = (
    "loss_mask", "sampler_logprobs", "old_logprobs", "ref_logprobs", "values", "advantages", "returns", "is_weights",
    "cov_selected", "is_mask",
)


@dataclass
class TrainBatch:
    """The tensors of one update. input_ids/attention_mask are [N, P + T] (prompts left-padded,
    responses right-padded); every per-token tensor is [N, T]."""

    input_ids: Tensor
    attention_mask: Tensor
    loss_mask: Tensor
    sampler_logprobs: Tensor
    old_logprobs: Tensor | None = None
    ref_logprobs: Tensor | None = None
    values: Tensor | None = None
    advantages: Tensor | None = None
    returns: Tensor | None = None
    is_weights: Tensor | None = None
    is_mask: Tensor | None = None
    """Set when the IS weights are computed per micro-batch from its own forward (an on-policy update): the
    tokens they and the mismatch metrics are taken over (the loss mask before DAPO's overlong filter)."""
    cov_selected: Tensor | None = None
    """Clip-Cov / KL-Cov's tokens, chosen over the whole mini-batch (rlvr.core.losses.covariance_selection)."""
    routes: Tensor | None = None
    """Mixture-of-experts routes to replay or compare with, int16 [N, P + T, layers, top_k] in the input_ids
    layout (rlvr.models.moe; -1: none recorded)."""
    rows: list[int] | None = None
    col0: int = 0
    """A micro-batch's first column in its parent batch's input_ids (micro-batches trim left padding)."""
    own: set[int] | None = None
    """The rows this rank trains on (data parallel: the samples of its share of the groups); None: all."""

    @classmethod
    def from_rollout(cls, rollout, pad_id: int, device) -> TrainBatch:
        t = rollout.to_tensors(pad_id)
        return cls(
            input_ids=t["input_ids"].to(device), attention_mask=t["attention_mask"].to(device),
            loss_mask=t["loss_mask"].to(device), sampler_logprobs=t["sampler_logprobs"].to(device),
            routes=t["routes"].to(device) if "routes" in t else None,
        )

    @property
    def t(self) -> int:
        return self.loss_mask.shape[1]

    def micro_batches(self, rows, size: int | None) -> list[TrainBatch]:
        """`rows` in micro-batches of at most `size` rows, sorted by length, with padding columns trimmed.

        Sorting and trimming change no value: padding is masked everywhere, positions come from the
        attention mask, and loss denominators are passed in from the whole mini-batch.
        """
        rows = list(rows)
        width = self.input_ids.shape[1]
        p = width - self.t
        prompt_len = self.attention_mask[:, :p].sum(-1)
        resp_len = self.attention_mask[:, p:].sum(-1)
        rows.sort(key=lambda r: (int(prompt_len[r] + resp_len[r]), r))
        size = size or len(rows)
        out = []
        for start in range(0, len(rows), size):
            idx = rows[start : start + size]
            sel = torch.tensor(idx, device=self.input_ids.device)
            first = p - int(prompt_len[sel].max())
            tm = max(1, int(resp_len[sel].max()))
            fields = {
                name: (None if getattr(self, name) is None else getattr(self, name)[sel, :tm]) for name in PER_TOKEN
            }
            out.append(TrainBatch(
                input_ids=self.input_ids[sel, first : p + tm], attention_mask=self.attention_mask[sel, first : p + tm],
                routes=None if self.routes is None else self.routes[sel, first : p + tm], rows=idx, col0=first,
                **fields,
            ))
        return out



class MetricSums:
    """Accumulates token-weighted and scalar metrics, and maxima, over micro-batches and optimizer steps."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.weights: dict[str, float] = {}
        self.maxima: dict[str, float] = {}

    def add(self, name: str, values: Tensor, mask: Tensor) -> None:
        w = float(mask.sum())
        if w:
            self.add_weighted(name, masked_mean(values, mask), w)

    def add_weighted(self, name: str, value, weight) -> None:
        w = float(weight)
        self.sums[name] = self.sums.get(name, 0.0) + float(value) * w
        self.weights[name] = self.weights.get(name, 0.0) + w

    def add_scalar(self, name: str, value) -> None:
        self.add_weighted(name, value, 1.0)

    def add_max(self, name: str, value) -> None:
        self.maxima[name] = max(self.maxima.get(name, -math.inf), float(value))

    def means(self) -> dict[str, float]:
        """The weighted means, and the maxima under their own names."""
        out = {k: self.sums[k] / self.weights[k] for k in self.sums if self.weights[k]}
        out.update(self.maxima)
        return out


def minibatch_rows(prompt_index: list[int], num_minibatches: int, seed: int) -> list[list[int]]:
    """Rows of each mini-batch, groups kept whole, groups shuffled with `seed`."""
    groups: dict[int, list[int]] = {}
    for row, p in enumerate(prompt_index):
        groups.setdefault(p, []).append(row)
    keys = list(groups)
    order = torch.randperm(len(keys), generator=torch.Generator().manual_seed(seed)).tolist()
    keys = [keys[i] for i in order] if num_minibatches > 1 else keys
    k = min(num_minibatches, len(keys))
    chunks = [keys[i * len(keys) // k : (i + 1) * len(keys) // k] for i in range(k)]
    return [[row for key in chunk for row in groups[key]] for chunk in chunks]
