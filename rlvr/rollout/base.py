"""The rollout interface: sampling parameters, the generated batch, and the engine protocol.

A rollout is N = len(prompts) * n samples in prompt-major order: sample j of prompt i is row i*n + j.
Everything a trainer needs comes back per sample, as plain Python lists (so batches can be sliced and
concatenated without knowing about tensors); `RolloutBatch.to_tensors` builds rlvr's padded layout
(docs/design.md, "Tensor conventions"): prompts left-padded, responses right-padded, `loss_mask` True on response tokens.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from rlvr.core.registry import Registry

FINISH_REASONS = ("stop", "length")
TRUNCATE_POLICIES = ("error", "left")


@dataclass(frozen=True)
class SamplingParams:
    """How to sample; validated on construction.

    The filters apply in the order temperature -> top-k -> top-p (as in Hugging Face `generate`), and the
    token is drawn from the renormalised result. `sampler_logprobs` are log-probs under exactly that
    distribution. `temperature == 0` is greedy decoding; its `sampler_logprobs` are the model's
    untempered, unfiltered log-probs of the chosen token (log_softmax(logits)), because the point mass that
    greedy decoding samples from would report 0 for every token and tell the trainer nothing.
    """

    n: int = 1
    """Samples per prompt (the group size)."""
    temperature: float = 1.0
    """Logits are divided by this before sampling; 0 means greedy (argmax)."""
    top_p: float = 1.0
    """Nucleus sampling: keep the most probable tokens until their mass reaches top_p; 1 keeps all."""
    top_k: int = 0
    """Keep only the k most probable tokens (ties at the k-th value are kept); 0 keeps all."""
    max_new_tokens: int = 256
    """A response that reaches this many tokens stops with finish reason "length"."""
    stop: tuple[str, ...] = ()
    """Stop strings, matched on the decoded response; the token completing one ends it ("stop")."""
    stop_token_ids: tuple[int, ...] = ()
    """Token ids that end a response ("stop"), in addition to the tokenizer's and model's eos ids."""
    seed: int | None = None
    """Same seed + same prompts + same params -> same samples. None: drawn from torch's global RNG."""
    stream_offset: int = 0
    """Sample s of this call uses random stream `stream_offset + s`: a data-parallel rank that generates
    prompts [a, b) of a batch passes a * n, so its samples are those one process would draw."""
    max_prompt_tokens: int | None = None
    """Longest prompt accepted; longer ones follow `truncate_prompt`. None: the model's context limit."""
    truncate_prompt: Literal["error", "left"] = "error"
    """What to do with a prompt that is too long: raise, or keep its last tokens ("left")."""
    ignore_eos: bool = False
    """Do not stop at eos ids (stop_token_ids and stop strings still apply); for benchmarks."""

    def __post_init__(self) -> None:
        # Lists are accepted for convenience and stored as tuples so the params stay hashable.
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))
        problems = []
        if not _is_int(self.n) or self.n < 1:
            problems.append(f"n must be an integer >= 1 (got {self.n!r})")
        if not _is_number(self.temperature) or not self.temperature >= 0 or self.temperature == float("inf"):
            problems.append(f"temperature must be a finite number >= 0, 0 meaning greedy (got {self.temperature!r})")
        if not _is_number(self.top_p) or not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], 1 meaning off (got {self.top_p!r})")
        if not _is_int(self.top_k) or self.top_k < 0:
            problems.append(f"top_k must be an integer >= 0, 0 meaning off (got {self.top_k!r})")
        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be an integer >= 1 (got {self.max_new_tokens!r})")
        if not all(isinstance(s, str) and s for s in self.stop):
            problems.append(f"stop must be non-empty strings (got {self.stop!r})")
        if not all(_is_int(t) and t >= 0 for t in self.stop_token_ids):
            problems.append(f"stop_token_ids must be integers >= 0 (got {self.stop_token_ids!r})")
        if not _is_int(self.stream_offset) or self.stream_offset < 0:
            problems.append(f"stream_offset must be an integer >= 0 (got {self.stream_offset!r})")
        if self.seed is not None and not _is_int(self.seed):
            problems.append(f"seed must be an integer or None (got {self.seed!r})")
        if self.max_prompt_tokens is not None and (not _is_int(self.max_prompt_tokens) or self.max_prompt_tokens < 1):
            problems.append(f"max_prompt_tokens must be an integer >= 1 or None (got {self.max_prompt_tokens!r})")
        if self.truncate_prompt not in TRUNCATE_POLICIES:
            problems.append(f"truncate_prompt must be one of {', '.join(TRUNCATE_POLICIES)} (got {self.truncate_prompt!r})")
        if problems:
            raise ValueError("invalid SamplingParams: " + "; ".join(problems))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@dataclass
class RolloutBatch:
    """N samples in prompt-major order (sample j of prompt i at row i*n + j): what an engine generated and,
    once scored (`rlvr.eval.scoring.score_rollouts`), what the reward made of it.

    One object carries a batch from the engine to the loss: every per-sample field is a list with one
    entry per sample (`rewards[i]` is sample i's), the per-group fields one entry per prompt (`examples`);
    `select` and `concat` handle each field by name, and `to_tensors` builds the training layout. Fields
    that a multi-turn or asynchronous rollout needs are per sample or per token from the start:
    `policy_versions` (the weights each sample was drawn with) and `token_masks` (which response tokens the
    policy chose; tokens that a tool inserted are False and stay out of the loss).
    """

    prompt_index: list[int]
    """The group of each sample: which prompt (position in the `prompt_ids` passed to `generate`) it answers."""
    prompt_ids: list[list[int]]
    """The prompt of each sample, after any truncation."""
    response_ids: list[list[int]]
    """Tokens exactly as sampled, including the eos/stop token that ended the response."""
    sampler_logprobs: list[list[float]]
    """Log-prob of each response token under the distribution it was sampled from (see SamplingParams)."""
    finish_reasons: list[str]
    """"stop" (eos, stop token or stop string) or "length" (max_new_tokens reached)."""
    response_lengths: list[int]
    num_generated_tokens: int = 0
    gen_time_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    """Engine-specific diagnostics (not per sample)."""
    policy_version: int = 0
    """The weights version (`RolloutEngine.update_weights`) the engine stamped the batch with; after `concat`,
    the oldest of the parts'."""
    routes: list[Tensor] | None = None
    """Mixture-of-experts models, when the engine records them (routing replay R3): per sample, the experts
    each of its tokens was routed to while sampling, int16 [len(prompt) + len(response), layers, top_k]
    (rlvr.models.moe; -1 where a token was never fed through the model, e.g. the last response token)."""
    policy_versions: list[int] | None = None
    """Per sample, the weights version it was drawn with (None: `policy_version` for every sample)."""
    token_masks: list[list[bool]] | None = None
    """Per sample, per response token: True where the policy chose the token (None: every token). A
    multi-turn rollout marks the tokens of tool outputs False: they are context, not actions."""
    # --- filled by scoring (rlvr.eval.scoring.score_rollouts) -------------------------------------------
    examples: list[Any] | None = None
    """Per prompt (group): the task example it was made from."""
    texts: list[str] | None = None
    """Per sample: the decoded response (special tokens skipped), as the reward saw it."""
    rewards: list[float] | None = None
    correct: list[bool] | None = None
    reward_components: dict[str, list[float]] = field(default_factory=dict)
    """Named parts of the reward (a composite reward's terms), per sample; 0 where a sample has none."""

    PER_SAMPLE = ("prompt_index", "prompt_ids", "response_ids", "sampler_logprobs", "finish_reasons",
                  "response_lengths", "routes", "policy_versions", "token_masks", "texts", "rewards", "correct")

    def __post_init__(self) -> None:
        if self.policy_versions is None:
            self.policy_versions = [self.policy_version] * len(self.response_ids)

    @property
    def scored(self) -> bool:
        return self.rewards is not None

    @property
    def num_groups(self) -> int:
        """How many prompts (groups) the batch answers."""
        if self.examples is not None:
            return len(self.examples)
        return max(self.prompt_index) + 1 if self.prompt_index else 0

    def reward_tensor(self) -> Tensor:
        return torch.tensor(self.rewards, dtype=torch.float32)

    def correct_tensor(self) -> Tensor:
        return torch.tensor(self.correct, dtype=torch.bool)

    def component_tensors(self) -> dict[str, Tensor]:
        return {k: torch.tensor(v) for k, v in self.reward_components.items()}

    def select(self, rows: list[int], prompt_index: list[int] | None = None,
               examples: list[Any] | None = None) -> RolloutBatch:
        """The samples `rows`, in that order; their groups renumbered to `prompt_index` when given (with the
        matching per-group `examples`), else kept."""
        rows = list(rows)
        changes: dict[str, Any] = {}
        for name in self.PER_SAMPLE:
            value = getattr(self, name)
            changes[name] = None if value is None else [value[i] for i in rows]
        if prompt_index is not None:
            changes["prompt_index"] = list(prompt_index)
        changes["examples"] = examples if examples is not None else self.examples
        changes["reward_components"] = {k: [v[i] for i in rows] for k, v in self.reward_components.items()}
        changes["num_generated_tokens"] = sum(changes["response_lengths"])
        return dataclasses.replace(self, **changes)

    def select_groups(self, groups: list[int]) -> RolloutBatch:
        """The samples of the given groups (prompt indices), in that order, renumbered 0..len(groups)-1."""
        rows_of: dict[int, list[int]] = {}
        for i, p in enumerate(self.prompt_index):
            rows_of.setdefault(p, []).append(i)
        rows = [i for p in groups for i in rows_of.get(p, [])]
        renumber = {p: j for j, p in enumerate(groups)}
        examples = None if self.examples is None else [self.examples[p] for p in groups]
        return self.select(rows, [renumber[self.prompt_index[i]] for i in rows], examples)

    @staticmethod
    def concat(parts: list[RolloutBatch]) -> RolloutBatch:
        """Several batches as one: the groups of part k follow those of the parts before it."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        changes: dict[str, Any] = {}
        for name in RolloutBatch.PER_SAMPLE:
            values = [getattr(p, name) for p in parts]
            changes[name] = None if any(v is None for v in values) else [x for v in values for x in v]
        offsets, off = [], 0
        for p in parts:
            offsets.append(off)
            off += p.num_groups
        changes["prompt_index"] = [i + o for p, o in zip(parts, offsets) for i in p.prompt_index]
        changes["examples"] = (None if any(p.examples is None for p in parts)
                               else [ex for p in parts for ex in p.examples])
        names = {k for p in parts for k in p.reward_components}
        changes["reward_components"] = {
            k: [x for p in parts for x in p.reward_components.get(k, [0.0] * len(p))] for k in names}
        changes["num_generated_tokens"] = sum(p.num_generated_tokens for p in parts)
        changes["gen_time_s"] = sum(p.gen_time_s for p in parts)
        changes["policy_version"] = min(p.policy_version for p in parts)
        return dataclasses.replace(first, **changes)

    def __len__(self) -> int:
        return len(self.response_ids)

    def to_tensors(self, pad_token_id: int) -> dict[str, Tensor]:
        """Padded tensors in rlvr's layout; P = longest prompt, T = longest response.

        Returns `input_ids` [N, P+T] (prompt left-padded to P, response right-padded to T),
        `attention_mask` [N, P+T] long (1 on real tokens), `response_ids` [N, T], `loss_mask` [N, T] bool
        (True on response tokens; with `token_masks`, on the tokens the policy chose), `sampler_logprobs`
        [N, T] float32 (0 on padding) and `group_ids` [N] long (the prompt index); with `routes`, also `routes`
        [N, P+T, layers, top_k] int16 in the input_ids layout (-1 on padding).
        """
        n = len(self.response_ids)
        p = max((len(x) for x in self.prompt_ids), default=0)
        t = max((len(x) for x in self.response_ids), default=0)
        input_ids = torch.full((n, p + t), pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((n, p + t), dtype=torch.long)
        loss_mask = torch.zeros((n, t), dtype=torch.bool)
        logprobs = torch.zeros((n, t), dtype=torch.float32)
        for i, (prompt, response, lps) in enumerate(zip(self.prompt_ids, self.response_ids, self.sampler_logprobs)):
            if len(lps) != len(response):
                raise ValueError(f"sample {i}: {len(response)} response tokens but {len(lps)} sampler log-probs")
            lp, lr = len(prompt), len(response)
            input_ids[i, p - lp : p] = torch.tensor(prompt, dtype=torch.long)
            attention_mask[i, p - lp : p] = 1
            input_ids[i, p : p + lr] = torch.tensor(response, dtype=torch.long)
            attention_mask[i, p : p + lr] = 1
            loss_mask[i, :lr] = True if self.token_masks is None else torch.tensor(self.token_masks[i])
            logprobs[i, :lr] = torch.tensor(lps, dtype=torch.float32)
        out = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "response_ids": input_ids[:, p:].clone(),
            "loss_mask": loss_mask,
            "sampler_logprobs": logprobs,
            "group_ids": torch.tensor(self.prompt_index, dtype=torch.long),
        }
        if self.routes is not None:
            from rlvr.models.moe import routes_from_rows

            layout = [(p - len(prompt), len(prompt) + len(response))
                      for prompt, response in zip(self.prompt_ids, self.response_ids)]
            out["routes"] = routes_from_rows(self.routes, layout, p + t)
        return out


class RolloutEngine(abc.ABC):
    """Generates responses for token-id prompts. Engines are built by `get_engine(name, model, tokenizer)`.

    The engine contract (docs/design.md, "The engine contract"): the trainer pushes its weights after every update with
    `update_weights(model, version)`; every `RolloutBatch` the engine returns afterwards carries that
    `policy_version`; `logprobs` gives the engine's own log-probs of given tokens, which the trainer
    compares with its own after each push (a stale or corrupted copy fails loudly, rather than the
    run training for hours on old samples).
    """

    policy_version: int = 0

    @abc.abstractmethod
    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> RolloutBatch:
        """`n` samples for each prompt, in prompt-major order, stamped with `policy_version`."""

    @abc.abstractmethod
    def update_weights(self, model_or_state_dict: Any, version: int | None = None) -> None:
        """Make later `generate` calls use these weights (a model object or a state dict); `version`
        (when given) becomes the engine's `policy_version`."""

    @abc.abstractmethod
    def logprobs(self, prompt_ids: list[int], response_ids: list[int]) -> list[float]:
        """log p(response token t | prompt, earlier response tokens) under the engine's current weights,
        at temperature 1 with no filter: the weight-sync check compares them with the trainer's."""

    def close(self) -> None:
        """Release what the engine holds (an inference server, its memory); the run calls it at its end."""


def state_tensors(source: Any) -> dict[str, Tensor]:
    """The weights an engine's `update_weights` is given, as a state dict: a module's, a state dict itself, or
    an iterable of (name, tensor) pairs (e.g. an FSDP-sharded policy's full weights, streamed)."""
    if isinstance(source, torch.nn.Module):
        return source.state_dict()
    if isinstance(source, dict):
        return source
    if hasattr(source, "__iter__"):
        pairs = list(source)
        if all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) and isinstance(p[1], Tensor) for p in pairs):
            return dict(pairs)
    raise TypeError(f"update_weights takes a torch.nn.Module, a state dict or (name, tensor) pairs, not "
                    f"{type(source).__name__}")


ENGINES: Registry = Registry("rollout engine")


def get_engine(name: str, model: Any, tokenizer: Any, **kwargs: Any) -> RolloutEngine:
    """The engine registered under `name`, built on `model` and `tokenizer` (kwargs go to its constructor)."""
    return ENGINES[name](model, tokenizer, **kwargs)
