"""The entropy of every decoder layer's internal policy on a model's own responses (`rlvr analyze layers`).

Samples responses to a task's problems, then, over the response tokens only, averages the entropy of each
decoder layer's internal policy pi_l = softmax(W_u h_l) ("Bottom-up Policy Optimization", arXiv 2512.19673;
rlvr.models.layers), both from the raw residual stream h_l (BuPO's definition) and through the model's
final norm (the logit lens). docs/layer-policies.md shows a table and how to read it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlvr.models.layers import layer_entropies, num_layers, plot_entropies
from rlvr.rollout import SamplingParams, get_engine

DEFINITION = ("entropy (nats) of softmax(W_u h_l) (raw) and softmax(W_u norm(h_l)) (final_norm), h_l the residual "
              "stream after decoder layer l (1-indexed), averaged over response tokens")


def response_layer_entropies(model, tokenizer, prompts: list[list[int]], params: SamplingParams,
                             batch_size: int = 16) -> tuple[dict[str, list[float]], int]:
    """Sample `params.n` responses per prompt with the HF engine; return each layer's mean entropy over all
    response tokens ({"raw": [...], "final_norm": [...]}, one value per layer) and the token count."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    depth = num_layers(model)
    batch = get_engine("hf", model, tokenizer).generate(prompts, params)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    totals = {"raw": [0.0] * depth, "final_norm": [0.0] * depth}
    tokens = 0
    device = next(model.parameters()).device
    for lo in range(0, len(batch), batch_size):
        t = batch.select(list(range(lo, min(len(batch), lo + batch_size)))).to_tensors(pad)
        count = int(t["loss_mask"].sum())
        if not count:
            continue
        means = layer_entropies(model, t["input_ids"].to(device), t["attention_mask"].to(device), t["loss_mask"].shape[1])
        for key in totals:  # token-weighted, so every response token counts once whatever its batch
            totals[key] = [s + m * count for s, m in zip(totals[key], means[key])]
        tokens += count
    if not tokens:
        raise ValueError("the model produced no response tokens to analyse; raise max_new_tokens")
    return {key: [s / tokens for s in values] for key, values in totals.items()}, tokens


def analyze_layers(model, tokenizer, task, examples: list, params: SamplingParams, out: str | Path, *,
                   model_name: str, task_name: str | None = None, split: str,
                   batch_size: int = 16) -> dict[str, Any]:
    """Sample responses of `model` to `examples` of `task`, measure each layer's policy entropy, and write
    layers.json (the returned report) and layers.png to `out`. `task_name` is the name the report gives the
    task (default: its registered name)."""
    task_name = task_name or task.name
    prompts = [tokenizer(task.prompt(ex, tokenizer), add_special_tokens=False)["input_ids"] for ex in examples]
    entropies, tokens = response_layer_entropies(model, tokenizer, prompts, params, batch_size)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "model": model_name, "architecture": type(model).__name__, "layers": num_layers(model), "task": task_name,
        "split": split, "problems": len(examples), "n": params.n, "temperature": params.temperature,
        "max_new_tokens": params.max_new_tokens, "response_tokens": tokens, "vocab_size": model.config.vocab_size,
        "entropy_raw": entropies["raw"], "entropy_final_norm": entropies["final_norm"], "definition": DEFINITION,
    }
    (out / "layers.json").write_text(json.dumps(report, indent=2) + "\n")
    name = Path(model_name).name or model_name
    plot_entropies(entropies, out / "layers.png", f"{name} on {task_name}: entropy of each layer's policy ({tokens} tokens)",
                   vocab_size=model.config.vocab_size)
    return report
