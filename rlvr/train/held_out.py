"""Held-out evaluation during a run (eval.every): the current policy sampled at the eval temperature, and greedy."""

from __future__ import annotations

from typing import Any

from rlvr.train.seeds import EVAL, derive_seed
from rlvr.train.trainer import Trainer


def held_out_eval(trainer: Trainer, examples: list[Any], step: int) -> dict[str, float]:
    """Held-out metrics of the current policy: sampled at the eval temperature, and greedy.

    - Common random numbers: every evaluation of a run uses the same sampling seed, so sample j of a
      problem draws the same uniforms at every step and step-to-step differences are paired.
    - A held-out set that repeats each distinct problem c times (the generated tasks' test splits) is
      sampled as c samples of each distinct problem: the same draws' worth of work, plus pass@k for k
      up to c. Otherwise every example is sampled once. Intervals count distinct problems.
    - Logged: eval_accuracy (mean@n, the fraction of samples correct) with its interval,
      eval_pass@k, eval_entropy (nats per token of the sampled responses, at the eval temperature),
      eval_response_len_mean, and eval_accuracy_greedy.
    """
    from rlvr.eval import evaluate
    from rlvr.eval.runner import problem_key

    cfg, models = trainer.cfg, trainer.models
    common = dict(
        max_new_tokens=cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens,
        template=models.task.template, engine=models.eval_engine or models.engine, seed=derive_seed(cfg.seed, EVAL),
    )
    temperature = cfg.eval.temperature if cfg.eval.temperature is not None else cfg.rollout.temperature
    distinct: dict[Any, Any] = {}
    counts: dict[Any, int] = {}
    for ex in examples:
        key = problem_key(ex)
        distinct.setdefault(key, ex)
        counts[key] = counts.get(key, 0) + 1
    repeats = set(counts.values())
    if len(repeats) == 1 and (c := repeats.pop()) > 1:
        problems, n = list(distinct.values()), c
    else:
        problems, n = list(examples), 1
    ks = sorted({k for k in (1, 2, 4, 8, 16, 32, 64, n) if k <= n})
    sampled = evaluate(models.policy, models.tokenizer, models.task, problems, n=n, k=ks, temperature=temperature,
                       with_entropy=True, **common)
    m = sampled.metrics
    row: dict[str, float] = {
        "eval_accuracy": m[f"mean@{n}"],
        "eval_accuracy_ci_low": m[f"mean@{n}_ci_low"],
        "eval_accuracy_ci_high": m[f"mean@{n}_ci_high"],
    }
    for k in ks:
        row[f"eval_pass@{k}"] = m[f"pass@{k}"]
    row["eval_entropy"] = m.get("entropy")
    row["eval_response_len_mean"] = m["response_len_mean"]
    if cfg.eval.greedy:
        # Greedy decoding gives a repeated problem the same answer every time, so each distinct problem
        # is decoded once and weighted by how often the held-out set holds it (same figure, less work).
        greedy = evaluate(models.policy, models.tokenizer, models.task, list(distinct.values()), n=1, k=(1,),
                          temperature=0.0, with_entropy=False, **common)
        correct = {s["problem_id"]: float(s["correct"]) for s in greedy.samples}
        by_key = dict(zip(distinct, (correct[ex.id] for ex in distinct.values())))
        row["eval_accuracy_greedy"] = sum(by_key[k] * c for k, c in counts.items()) / len(examples)
    return row
