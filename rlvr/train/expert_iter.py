"""Expert iteration (STaR): sample, keep the verified answers, fine-tune on them, repeat.

STaR (Zelikman et al., 2022, "STaR: Bootstrapping Reasoning With Reasoning", Algorithm 1): in each
outer iteration the current model answers the training problems, the answers the verifier accepts
become a supervised data set, and a model is fine-tuned on it. Here, for rounds r = 1..R:

1. take `prompts` training problems (a seeded stream: each round continues where the last stopped,
   reshuffling after every pass over the split);
2. sample `k` responses to each with the current model at `temperature` (the `hf` engine);
3. keep those with `task.score(...).correct`; identical responses to one problem are kept once;
   `max_per_prompt` caps what one problem contributes; responses cut by the length limit are
   dropped unless `keep_truncated` (SFT appends eos, which would teach the model to stop mid-answer);
4. fine-tune on the kept (prompt, response) pairs with rlvr.train.sft;
5. measure held-out accuracy: greedy (on the distinct problems) and sampled at `temperature`
   (one sample per held-out example, the same seed every round so rounds differ by the model only).
Round 0 is the evaluation of the starting model.

Departures from STaR:
- By default each round continues from the current model (and a fresh AdamW), rather than restarting
  from the base model as STaR does to limit overfitting; `restart_from_base=True` restores the base
  weights before each round's fine-tuning (the samples still come from the latest model, as in STaR).
  Continuing is cheaper on a small budget: each round builds on the last with a few SFT steps.
- No rationalization (STaR's second pass that re-asks failed problems with the answer as a hint).
- A fixed number of SFT epochs per round instead of STaR's step count growing 20% per round.
- A random subset of `prompts` problems per round instead of the whole training set.

Measured: SmolLM2-135M-Instruct (embedded, chat template) on single-digit addition, `rlvr expert-iter
--task arithmetic --task-kwargs digits=1 --rounds 3 --prompts 32 --k 4 --max-new-tokens 24
--max-per-prompt 1 --lr 5e-5 --epochs 2 --micro-batch-size 8 --eval-size 60`: held-out greedy accuracy
0.65, 1.00, 1.00, 0.70 and sampled (temperature 1) 0.20, 0.60, 0.82, 0.75 after rounds 0-3 (20
distinct held-out problems). Round 3 drifted: the lenient last-number grader had accepted lucky
rationales ("Write (0 + 3) = 3"), and the model learned their shape, which is STaR's known weakness
with a verifier that checks only the final answer. About 15 CPU minutes on a shared 2-core machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rlvr.config.commands import ExpertIterConfig
from rlvr.rollout import SamplingParams, get_engine
from rlvr.train.data import PromptStream
from rlvr.train.sft import SFTRecord, sft, task_accuracy


@dataclass
class Filtered:
    """The outcome of sampling one round: what is kept for SFT, and a log row per sample."""

    records: list[SFTRecord]
    samples: list[dict[str, Any]]
    num_samples: int
    num_correct: int
    prompts_with_kept: int


def sample_and_filter(engine, tokenizer, task, examples: Sequence[Any], config: ExpertIterConfig, seed: int) -> Filtered:
    """Steps 2-3 of a round (module docstring): k samples per example, the verified ones kept."""
    prompts = [task.prompt(ex, tokenizer) for ex in examples]
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    params = SamplingParams(n=config.k, temperature=config.temperature, top_p=config.top_p,
                            max_new_tokens=config.max_new_tokens or task.max_new_tokens, seed=seed)
    batch = engine.generate(prompt_ids, params)
    responses = tokenizer.batch_decode(batch.response_ids, skip_special_tokens=True)
    records, samples, seen = [], [], set()
    kept_per_prompt = [0] * len(examples)
    num_correct = 0
    for row, response in enumerate(responses):
        p = batch.prompt_index[row]
        correct = bool(task.score(response, examples[p]).correct)
        num_correct += correct
        truncated = batch.finish_reasons[row] == "length"
        why = None
        if not correct:
            why = "wrong"
        elif truncated and not config.keep_truncated:
            why = "truncated"
        elif (p, response) in seen:
            why = "duplicate"
        elif config.max_per_prompt is not None and kept_per_prompt[p] >= config.max_per_prompt:
            why = "cap"
        if why is None:
            seen.add((p, response))
            kept_per_prompt[p] += 1
            records.append(SFTRecord(prompts[p], response))
        samples.append({"problem_id": examples[p].id, "answer": str(examples[p].answer), "response": response,
                        "correct": correct, "finish_reason": batch.finish_reasons[row], "kept": why is None,
                        "dropped_because": why})
    return Filtered(records, samples, len(responses), num_correct, sum(1 for n in kept_per_prompt if n))


def held_out_metrics(model, tokenizer, task, examples: Sequence[Any], config: ExpertIterConfig, engine) -> dict[str, float]:
    """eval_accuracy (sampled at the sampling temperature) and eval_accuracy_greedy."""
    common = dict(max_new_tokens=config.max_new_tokens or task.max_new_tokens, seed=config.seed + 7919, engine=engine)
    sampled = task_accuracy(model, tokenizer, task, examples, temperature=config.temperature, **common)
    greedy = task_accuracy(model, tokenizer, task, examples, temperature=0.0, **common)
    return {"eval_accuracy": sampled["accuracy"], "eval_accuracy_greedy": greedy["accuracy"],
            "eval_response_len_mean": sampled["response_len_mean"], "eval_problems_greedy": greedy["problems"]}


def expert_iteration(
    model,
    tokenizer,
    task,
    *,
    config: ExpertIterConfig | None = None,
    engine=None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    on_samples: Callable[[int, list[dict[str, Any]]], None] | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run expert iteration on `model` in place (module docstring); returns one metrics row per round.

    Row 0 holds the starting model's held-out accuracy. Rows 1..R hold: round, kept (records
    fine-tuned on), kept_frac (of all samples), sample_accuracy (correct fraction of the samples),
    prompts_with_kept, sft_loss (mean training loss of the round's SFT steps; null when nothing was
    kept and the round skipped fine-tuning), sft_steps, eval_accuracy, eval_accuracy_greedy, and the
    seconds spent sampling, fine-tuning and evaluating. `on_round(row)` is called with each row,
    `on_samples(round, rows)` with each round's per-sample log rows.
    """
    config = config or ExpertIterConfig()
    config.check()
    engine = engine or get_engine("hf", model, tokenizer)
    stream = PromptStream(task.examples("train"), config.seed)
    eval_examples = task.examples("test", limit=config.eval_size)
    base_state = {k: v.detach().clone() for k, v in model.state_dict().items()} if config.restart_from_base else None
    rows = []

    def finish(row: dict[str, Any]) -> None:
        rows.append(row)
        if on_round is not None:
            on_round(row)
        shown = ("kept", "sample_accuracy", "sft_loss", "eval_accuracy_greedy", "eval_accuracy", "round_time_s")
        log("round {}: {}".format(row["round"], ", ".join(
            f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if k in shown)))

    t0 = time.perf_counter()
    finish({"round": 0, "step": 0, **held_out_metrics(model, tokenizer, task, eval_examples, config, engine),
            "eval_time_s": time.perf_counter() - t0})
    for rnd in range(1, config.rounds + 1):
        finish(_round(rnd, model, tokenizer, task, stream, eval_examples, config, engine, base_state, on_samples, log))
    return rows


def _round(rnd: int, model, tokenizer, task, stream, eval_examples, config: ExpertIterConfig, engine, base_state,
           on_samples, log) -> dict[str, Any]:
    """One round of expert iteration: sample, keep the correct samples, fine-tune on them, evaluate."""
    t_round = time.perf_counter()
    examples = stream.take(config.prompts)
    filtered = sample_and_filter(engine, tokenizer, task, examples, config, seed=config.seed * 1_000_003 + rnd)
    if on_samples is not None:
        on_samples(rnd, filtered.samples)
    t_sft = time.perf_counter()
    row: dict[str, Any] = {
        "round": rnd, "step": rnd, "kept": len(filtered.records),
        "kept_frac": len(filtered.records) / filtered.num_samples,
        "sample_accuracy": filtered.num_correct / filtered.num_samples,
        "prompts_with_kept": filtered.prompts_with_kept, "sample_time_s": t_sft - t_round,
    }
    if filtered.records:
        if base_state is not None:
            model.load_state_dict(base_state)
        sft_config = config.sft.model_copy(update={"seed": config.sft.seed * 1_000_003 + rnd})
        result = sft(model, tokenizer, filtered.records, config=sft_config)
        row.update(sft_loss=result.loss_mean, sft_steps=result.steps)
    else:
        log(f"round {rnd}: no correct sample to learn from; the model is unchanged this round")
        row.update(sft_loss=None, sft_steps=0)
    t_eval = time.perf_counter()
    row.update(held_out_metrics(model, tokenizer, task, eval_examples, config, engine))
    row.update(sft_time_s=t_eval - t_sft, eval_time_s=time.perf_counter() - t_eval,
               round_time_s=time.perf_counter() - t_round)
    return row
