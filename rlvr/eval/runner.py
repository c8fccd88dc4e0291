"""Evaluate a model on a task: sample n responses per problem, score them, summarise.

`evaluate` is the one evaluation path: `rlvr eval` calls it, and so does the trainer's periodic
held-out evaluation (passing its own rollout engine, so the weights it samples from are the ones
being trained).

Metrics, each computed per problem and then averaged over problems, with a 95% confidence interval
over *distinct* problems (examples sharing `meta["problem_id"]` count once; `rlvr.eval.metrics.summarize`):
the Wilson score interval for rates, a normal approximation for the rest (NaN, written as null, with
fewer than two distinct problems):

- `pass@k` for each requested k <= n: unbiased estimator from the problem's c correct of n.
- `mean@n`: fraction of the n samples that are correct.
- `maj@n`: whether the majority extracted answer is correct (needs `task.extract_answer`; ties go to
  the answer sampled first).
- `reward_mean`: mean scalar reward.
- `format_rate`: fraction of samples whose reward components say the format is right (only when the
  task reports a format component).
- `response_len_mean`: tokens per response, counting the eos token that ended it (as sampled).
- `truncated_frac`: fraction stopped by the length limit (finish reason "length").
- `entropy`: per-token entropy (nats) of softmax(logits / temperature), averaged over all response
  tokens of the problem (a token mean within the problem, then a mean over problems). It is the
  entropy before any top-p / top-k truncation. Greedy decoding (temperature 0) reports it at
  temperature 1, since the temperature-0 distribution is a point mass.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch

from rlvr.core.masked import masked_sum
from rlvr.eval.metrics import per_problem_metrics, rate_metrics, summarize
from rlvr.eval.result import EvalResult
from rlvr.eval.scoring import score_rollouts


def evaluate(
    model,
    tokenizer,
    task,
    examples: Sequence,
    *,
    n: int = 1,
    k: Sequence[int] = (1,),
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    max_new_tokens: int | None = None,
    template: str | None = None,
    seed: int = 0,
    engine=None,
    batch_size: int = 64,
    with_entropy: bool = True,
    stop: Sequence[str] | None = None,
) -> EvalResult:
    """Sample `n` responses to each of `examples`, score them with `task.score`, summarise.

    `temperature=0` is greedy decoding and needs `n=1` (the samples would be identical).
    `batch_size` is the number of sequences (prompts × n) per generation call and per entropy
    forward pass. `engine` is a rollout engine to reuse (default: a new `hf` engine on `model`).
    `template`: prompt template; default: the task's own (`task.template`), else "chat". The task
    grades with its own settings, so a template different from the task's is allowed but suspect.
    `stop`: extra stop strings for generation. `max_new_tokens` None: the task's response budget
    (`task.max_new_tokens`, else 256). An exception raised by `task.score` propagates as a RuntimeError that
    names the problem.
    """
    if max_new_tokens is None:
        max_new_tokens = getattr(task, "max_new_tokens", 256)
    ks = _check_settings(examples, n, k, temperature, top_p, top_k, max_new_tokens, batch_size)
    from rlvr.rollout import SamplingParams, get_engine
    from rlvr.tasks.templates import render_prompt

    if template is None:
        template = getattr(task, "template", None) or "chat"
    if engine is None:
        engine = get_engine("hf", model, tokenizer)
    prompt_ids = [
        tokenizer(render_prompt(tokenizer, task.messages(ex), template=template), add_special_tokens=False)["input_ids"]
        for ex in examples
    ]
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    entropy_temperature = temperature if temperature > 0 else 1.0
    extract = getattr(task, "extract_answer", None)

    t_start = time.perf_counter()
    gen_time = entropy_time = score_time = 0.0
    generated_tokens = 0
    samples: list[dict[str, Any]] = []
    prompts_per_call = max(1, batch_size // n)
    for call_index, start in enumerate(range(0, len(examples), prompts_per_call)):
        chunk = list(range(start, min(start + prompts_per_call, len(examples))))
        params = SamplingParams(
            n=n,
            temperature=float(temperature),
            top_p=float(top_p),
            top_k=int(top_k),
            max_new_tokens=int(max_new_tokens),
            stop=list(stop or []),
            stop_token_ids=[],
            # A distinct seed per call: the same seed would replay the same random stream per chunk.
            seed=seed + call_index,
        )
        t0 = time.perf_counter()
        batch = engine.generate([prompt_ids[i] for i in chunk], params)
        gen_time += time.perf_counter() - t0
        if len(batch.response_ids) != len(chunk) * n:
            raise RuntimeError(
                f"the rollout engine returned {len(batch.response_ids)} samples for {len(chunk)} prompts x n={n}; "
                "an engine must return exactly n samples per prompt, in prompt-major order"
            )
        generated_tokens += int(batch.num_generated_tokens)

        entropy_sums: list[float | None] = [None] * len(batch.response_ids)
        if with_entropy:
            t0 = time.perf_counter()
            entropy_sums = _entropy_sums(model, batch, pad_token_id, entropy_temperature, batch_size)
            entropy_time += time.perf_counter() - t0

        t0 = time.perf_counter()
        scored = score_rollouts(batch, [examples[i] for i in chunk], task, tokenizer)
        for row, response in enumerate(scored.texts):
            ex = examples[chunk[row // n]]
            try:
                extracted = extract(response) if extract is not None else None
            except Exception as e:
                raise RuntimeError(
                    f"scoring problem {ex.id!r} (sample {row % n}) failed: {type(e).__name__}: {e}"
                ) from e
            length = int(batch.response_lengths[row])
            samples.append(
                {
                    "problem_id": ex.id,
                    "sample_index": row % n,
                    "question": ex.question,
                    "answer": ex.answer,
                    "response": response,
                    "reward": scored.rewards[row],
                    "correct": scored.correct[row],
                    "extracted_answer": extracted,
                    "components": {c: v[row] for c, v in scored.reward_components.items()},
                    "length": length,
                    "finish_reason": batch.finish_reasons[row],
                    "entropy": None if entropy_sums[row] is None or length == 0 else entropy_sums[row] / length,
                    "_entropy_sum": entropy_sums[row],
                }
            )
        score_time += time.perf_counter() - t0

    per_problem = per_problem_metrics(samples, n, ks, has_extractor=extract is not None)
    clusters = [problem_key(ex) for ex in examples]
    metrics = summarize(per_problem, rates=rate_metrics(list(per_problem)), clusters=clusters)
    for s in samples:
        del s["_entropy_sum"]
    total = time.perf_counter() - t_start
    settings = {
        "task": getattr(task, "name", type(task).__name__),
        "num_problems": len(examples),
        "num_distinct_problems": len(set(clusters)),
        "n": n,
        "k": ks,
        "temperature": float(temperature),
        "top_p": float(top_p),
        "top_k": int(top_k),
        "max_new_tokens": int(max_new_tokens),
        "stop": list(stop or []),
        "template": template,
        "seed": seed,
        "batch_size": batch_size,
        "entropy_temperature": entropy_temperature if with_entropy else None,
    }
    timing = {
        "total_s": total,
        "generate_s": gen_time,
        "entropy_s": entropy_time,
        "score_s": score_time,
        "generated_tokens": float(generated_tokens),
        "tokens_per_s": generated_tokens / gen_time if gen_time > 0 else math.nan,
    }
    return EvalResult(metrics=metrics, samples=samples, settings=settings, timing=timing)


def problem_key(example) -> Any:
    """The distinct problem an example poses: `meta["problem_id"]` for a repeated one, else its id."""
    return (getattr(example, "meta", None) or {}).get("problem_id", example.id)


def _check_settings(examples, n, k, temperature, top_p, top_k, max_new_tokens, batch_size) -> list[int]:
    if len(examples) == 0:
        raise ValueError("no problems to evaluate: the example list is empty (check the split and --limit)")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer (samples per problem); got {n!r}")
    ks = sorted({int(x) for x in k})
    if not ks:
        raise ValueError("k is empty; give at least one k for pass@k, e.g. k=(1,)")
    bad = [x for x in ks if not 1 <= x <= n]
    if bad:
        raise ValueError(f"pass@k needs 1 <= k <= n; got k={bad} with n={n}: raise n or drop those k")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy); got {temperature}")
    if temperature == 0 and n > 1:
        raise ValueError(
            f"greedy decoding (temperature 0) gives {n} identical samples per problem; use n=1, or sample with temperature > 0"
        )
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1]; got {top_p}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 turns it off); got {top_k}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1; got {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    return ks


@torch.no_grad()
def _entropy_sums(model, batch, pad_token_id: int, temperature: float, batch_size: int) -> list[float]:
    """Sum over each response's tokens of the policy entropy (nats), in forward passes of batch_size rows."""
    from rlvr.models.logprobs import response_logprobs

    tensors = batch.to_tensors(pad_token_id)
    input_ids, attention_mask, loss_mask = tensors["input_ids"], tensors["attention_mask"], tensors["loss_mask"]
    num_response_tokens = loss_mask.shape[1]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sums: list[float] = []
    try:
        for start in range(0, input_ids.shape[0], batch_size):
            rows = slice(start, start + batch_size)
            _, entropy = response_logprobs(
                model,
                input_ids[rows].to(device),
                attention_mask[rows].to(device),
                num_response_tokens,
                temperature=temperature,
                return_entropy=True,
            )
            mask = loss_mask[rows].to(entropy.device)
            sums.extend(masked_sum(entropy.float(), mask, dim=1).tolist())  # [rows]
    finally:
        model.train(was_training)
    return sums
