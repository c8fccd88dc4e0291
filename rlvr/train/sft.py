"""Supervised fine-tuning (SFT): raise the log-likelihood of given responses to given prompts.

For a prompt x_i and a response y_i (its tokens followed by eos), the loss is the masked negative
log-likelihood of the response tokens only,

    l_it = -log p_theta(y_it | x_i, y_i,<t)            for t < |y_i| (eos included; prompt tokens excluded)
    loss = aggregate(l, loss_mask, mode)               (rlvr.core.sft_loss / rlvr.core.aggregation)

with `token_mean` (every response token weighs the same, the usual SFT loss) as the default mode.
The prompt is conditioning, not a target: the model is not trained to write prompts.

Batches and micro-batches. Each optimizer step takes `batch_size` records (shuffled every epoch with
the seed); the batch is processed in micro-batches of `micro_batch_size` records whose gradients
accumulate. Every micro-batch's loss uses the batch-wide denominators (total response tokens and
sequences of the whole batch, and `max_len` as Dr. GRPO's constant), so the accumulated gradient
equals the gradient of the whole batch at once whatever the micro-batch size (docs/design.md, "The training step").

Tokenization matches generation: the rendered prompt is tokenized without special tokens (the chat
template already holds them), the response separately, then the tokenizer's eos id is appended, as
the rollout engine sees a prompt and then samples response tokens. A record longer than `max_len`
tokens keeps its prompt and loses the end of its response (eos included); a record whose prompt
alone fills `max_len` is dropped. Both are counted.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rlvr.config.commands import SFTConfig
from rlvr.core.losses import sft_loss
from rlvr.models.logprobs import response_logprobs
from rlvr.rollout.base import RolloutBatch
from rlvr.train.checkpoint import save_checkpoint
from rlvr.train.optim import adamw


@dataclass(frozen=True)
class SFTRecord:
    """One training pair: `prompt` is the rendered prompt text (template applied), `response` the
    text the model should write after it (without eos: it is appended when tokenizing)."""

    prompt: str
    response: str


@dataclass
class Tokenized:
    """A record as token ids: `response_ids` end with eos unless the record was cut at max_len."""

    prompt_ids: list[int]
    response_ids: list[int]


@dataclass
class TokenizeStats:
    records: int = 0
    truncated: int = 0
    """Records whose response was cut to fit max_len (they lose their eos)."""
    dropped: int = 0
    """Records whose prompt alone fills max_len (not trained on)."""


def tokenize_records(tokenizer, records: Sequence[SFTRecord], max_len: int) -> tuple[list[Tokenized], TokenizeStats]:
    """Token ids of `records` (module docstring: special tokens, eos, truncation) and what was cut."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos token; SFT appends eos to each response so the model learns to stop")
    stats = TokenizeStats()
    out = []
    for record in records:
        prompt = tokenizer(record.prompt, add_special_tokens=False)["input_ids"]
        response = tokenizer(record.response, add_special_tokens=False)["input_ids"] + [eos]
        if len(prompt) >= max_len:
            stats.dropped += 1
            continue
        if len(prompt) + len(response) > max_len:
            response = response[: max_len - len(prompt)]
            stats.truncated += 1
        out.append(Tokenized(list(prompt), list(response)))
    stats.records = len(out)
    return out, stats


def collate(items: Sequence[Tokenized], pad_token_id: int) -> dict[str, Tensor]:
    """rlvr's batch layout for `items` (prompts left-padded, responses right-padded, `loss_mask`)."""
    batch = RolloutBatch(
        prompt_index=list(range(len(items))),
        prompt_ids=[it.prompt_ids for it in items],
        response_ids=[it.response_ids for it in items],
        sampler_logprobs=[[0.0] * len(it.response_ids) for it in items],
        finish_reasons=["stop"] * len(items),
        response_lengths=[len(it.response_ids) for it in items],
    )
    return batch.to_tensors(pad_token_id)


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def micro_batch_loss(model, items: Sequence[Tokenized], pad_token_id: int, aggregation: str, **denominators) -> Tensor:
    """The SFT loss of `items` (a micro-batch) with the given batch-wide denominators (0-dim, with grad)."""
    device = next(model.parameters()).device
    tensors = collate(items, pad_token_id)
    loss_mask = tensors["loss_mask"].to(device)  # [n, T]
    logprobs, _ = response_logprobs(
        model, tensors["input_ids"].to(device), tensors["attention_mask"].to(device), loss_mask.shape[1]
    )  # [n, T]
    return sft_loss(logprobs, loss_mask, mode=aggregation, **denominators)


@torch.no_grad()
def evaluate_loss(
    model, tokenizer, records: Sequence[SFTRecord], *, max_len: int = 512, batch_size: int = 16
) -> dict[str, float]:
    """Held-out loss: the mean negative log-likelihood per response token (nats), over all records.

    Returns {"loss": sum of token NLLs / number of response tokens, "tokens": that number}.
    """
    items, _ = tokenize_records(tokenizer, records, max_len)
    if not items:
        raise ValueError("no held-out records to compute a loss on (empty, or every prompt is longer than max_len)")
    total_tokens = sum(len(it.response_ids) for it in items)
    was_training = model.training
    model.eval()
    try:
        total = 0.0
        for start in range(0, len(items), batch_size):
            # token_mean with the global token count: the chunks' losses add up to the mean.
            total += float(micro_batch_loss(model, items[start : start + batch_size], pad_id(tokenizer), "token_mean",
                                            num_tokens=total_tokens))
    finally:
        model.train(was_training)
    return {"loss": total, "tokens": float(total_tokens)}


@dataclass
class SFTResult:
    steps: int
    """Optimizer steps taken."""
    loss_mean: float
    """Mean of the steps' batch losses (per token for token_mean); NaN if no step was taken."""
    history: list[dict[str, float]] = field(default_factory=list)
    """One row per optimizer step: step, epoch, loss, grad_norm, tokens, step_time_s."""
    tokenize: TokenizeStats = field(default_factory=TokenizeStats)


def sft(
    model,
    tokenizer,
    records: Sequence[SFTRecord],
    *,
    config: SFTConfig | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    on_step: Callable[[dict[str, float]], None] | None = None,
    on_epoch_end: Callable[[int, int], None] | None = None,
    console=None,
    progress: bool = False,
) -> SFTResult:
    """Fine-tune `model` in place on `records` (see the module docstring); returns the step history.

    `config`: an SFTConfig (rlvr.config.commands; the `sft` section of `rlvr sft`), default its defaults.
    `optimizer`: default AdamW(lr, weight_decay) over the model's parameters; pass one to keep its
    state across calls or to use another. `on_step(row)` is called after each optimizer step with its
    metrics; `on_epoch_end(epoch, step)` after each epoch (1-based epoch, steps so far), e.g. for a
    held-out evaluation. The model is left in the train/eval mode it came in.
    """
    config = config or SFTConfig()
    config.check()
    if not records:
        raise ValueError("no SFT records to train on")
    items, stats = tokenize_records(tokenizer, records, config.max_len)
    if not items:
        raise ValueError(f"every one of the {len(records)} records has a prompt of at least max_len={config.max_len} "
                         "tokens; raise max_len")
    if optimizer is None:
        optimizer = adamw(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    micro = config.micro_batch_size or config.batch_size
    pad = pad_id(tokenizer)
    steps_per_epoch = math.ceil(len(items) / config.batch_size)
    history: list[dict[str, float]] = []
    bar = _progress(console, enabled=progress)
    was_training = model.training
    model.train()
    try:
        with bar:
            task_id = bar.add_task("sft", total=steps_per_epoch * config.epochs, loss=float("nan"))
            for epoch in range(1, config.epochs + 1):
                gen = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
                order = torch.randperm(len(items), generator=gen).tolist()
                for start in range(0, len(order), config.batch_size):
                    batch = [items[i] for i in order[start : start + config.batch_size]]
                    row = _optimizer_step(model, optimizer, batch, micro, pad, config)
                    row = {"step": len(history) + 1, "epoch": epoch, **row}
                    history.append(row)
                    if on_step is not None:
                        on_step(row)
                    bar.update(task_id, advance=1, loss=row["loss"])
                if on_epoch_end is not None:
                    on_epoch_end(epoch, len(history))
    finally:
        model.train(was_training)
    loss_mean = sum(r["loss"] for r in history) / len(history) if history else math.nan
    return SFTResult(steps=len(history), loss_mean=loss_mean, history=history, tokenize=stats)


def _optimizer_step(model, optimizer, batch: list[Tokenized], micro: int, pad: int, config: SFTConfig) -> dict[str, float]:
    t0 = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    denominators = {
        "num_tokens": sum(len(it.response_ids) for it in batch),
        "num_sequences": sum(1 for it in batch if it.response_ids),
        "constant": float(config.max_len),
    }
    total = 0.0
    for start in range(0, len(batch), micro):
        loss = micro_batch_loss(model, batch[start : start + micro], pad, config.aggregation, **denominators)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the SFT loss is {float(loss)}; lower the learning rate or check the data")
        loss.backward()
        total += float(loss.detach())
    params = [p for p in model.parameters() if p.grad is not None]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm or float("inf"))
    optimizer.step()
    return {
        "loss": total,
        "grad_norm": float(grad_norm),
        "tokens": float(denominators["num_tokens"]),
        "step_time_s": time.perf_counter() - t0,
    }


# --- run directories and held-out accuracy (shared with expert iteration) ---------------------------------


def save_final_model(run_dir: str | Path, model, tokenizer, step: int) -> Path:
    """Write the model to RUN_DIR/model and as RUN_DIR/checkpoints/step_<step>/model (with
    checkpoints/latest naming it), the layout `rlvr eval RUN_DIR` reads; the files of the two copies
    are hard links where the file system allows (no second copy on disk). Returns RUN_DIR/model."""
    run_dir = Path(run_dir)
    ckpt = save_checkpoint(run_dir, step, model, tokenizer, {"kind": "final"}, keep_last=1)
    final = run_dir / "model"
    if final.exists():
        shutil.rmtree(final)
    shutil.copytree(ckpt / "model", final, copy_function=_link_or_copy)
    return final


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def distinct_problems(examples: Sequence[Any]) -> list[Any]:
    """`examples` without round-robin repeats (rlvr.tasks.base.repeat_to_size): one per problem id."""
    seen, out = set(), []
    for ex in examples:
        key = (getattr(ex, "meta", None) or {}).get("problem_id", getattr(ex, "id", None))
        if key not in seen:
            seen.add(key)
            out.append(ex)
    return out


def task_accuracy(model, tokenizer, task, examples: Sequence[Any], *, temperature: float,
                  max_new_tokens: int | None = None, seed: int = 0, engine=None) -> dict[str, float]:
    """Held-out accuracy (mean@1) of one response per problem, via rlvr.eval.evaluate; max_new_tokens None:
    the task's response budget (`Task.max_new_tokens`).

    Greedy decoding (temperature 0) answers a repeated problem the same way every time, so it runs
    on the distinct problems only (each problem weighs the same either way, see repeat_to_size).
    Returns {"accuracy", "response_len_mean", "problems"}.
    """
    from rlvr.eval import evaluate

    if temperature == 0:
        examples = distinct_problems(examples)
    result = evaluate(model, tokenizer, task, examples, n=1, k=(1,), temperature=temperature,
                      max_new_tokens=max_new_tokens, template=getattr(task, "template", None), seed=seed,
                      engine=engine, with_entropy=False)
    return {"accuracy": result.metrics["mean@1"], "response_len_mean": result.metrics["response_len_mean"],
            "problems": float(len(examples))}


def _progress(console, enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]sft step"), MofNCompleteColumn(), BarColumn(), TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=console, disable=not enabled, transient=False,
    )
