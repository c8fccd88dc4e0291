"""A run's trained policy as a plain Hugging Face model directory (`rlvr export`).

A run's checkpoints hold either the whole model (full fine-tuning) or a LoRA adapter only; `export` writes,
in both cases, a model that transformers' `from_pretrained` and vLLM load without rlvr or peft: an adapter
is merged into its base model (named by the run's config) first. The directory gets a model card
(README.md) with the run's config and its last held-out metrics.
"""

from __future__ import annotations

from pathlib import Path


def export(source: str | Path, out: str | Path, step: int | None = None) -> Path:
    """Write the policy of `source` (run directory or checkpoint) to `out` as a plain HF model with a card."""
    from rlvr.config import load_recipe, resolve
    from rlvr.models import load_model, save_model
    from rlvr.models.lora import is_adapter_dir, load_adapter, merged_model
    from rlvr.train.checkpoint import latest_checkpoint

    source = Path(source)
    if (source / "model").is_dir():
        ckpt, run_dir = source, source.parent.parent
    elif step is not None:
        ckpt, run_dir = source / "checkpoints" / f"step_{step:06d}", source
        if not (ckpt / "model").is_dir():
            have = sorted(int(p.name[5:]) for p in (source / "checkpoints").glob("step_*") if p.name[5:].isdigit())
            raise FileNotFoundError(f"{source} has no checkpoint of step {step} (it has: "
                                    f"{', '.join(map(str, have)) or 'none'}; checkpoint.keep_last sets how many stay)")
    else:
        ckpt, run_dir = latest_checkpoint(source), source
        if ckpt is None:
            raise FileNotFoundError(f"{source} has no checkpoint (checkpoints/latest is missing)")
    model_dir = ckpt / "model"
    if is_adapter_dir(model_dir):
        config_file = run_dir / "config.yaml"
        if not config_file.exists():
            raise FileNotFoundError(f"{model_dir} holds a LoRA adapter; its base model is named in {config_file}, "
                                    "which is missing")
        cfg = resolve(load_recipe(config_file))
        base, tokenizer = load_model(cfg.model.name, cache_dir=cfg.model.cache_dir,
                                     trust_remote_code=cfg.model.trust_remote_code)
        model = merged_model(load_adapter(base, model_dir, trainable=False))
    else:
        model, tokenizer = load_model(str(model_dir))
    path = save_model(model, tokenizer, out)
    (Path(path) / "README.md").write_text(model_card(run_dir, ckpt))
    return path


def model_card(run_dir: Path, ckpt: Path) -> str:
    """A short Hugging Face model card: what trained the model, its last held-out metrics, its config."""
    import yaml

    from rlvr.logging.jsonl import jsonl_path, read_jsonl

    config_file = run_dir / "config.yaml"
    config = yaml.safe_load(config_file.read_text()) if config_file.exists() else {}
    config = config if isinstance(config, dict) else {}
    command = config.get("command", "train")
    alg = config.get("algorithm") if isinstance(config.get("algorithm"), dict) else {}
    advantage = alg.get("advantage")
    algorithm = alg.get("preset") or (advantage.get("name") if isinstance(advantage, dict) else advantage)
    task = (config.get("task") or {}).get("name") if isinstance(config.get("task"), dict) else None
    base = (config.get("model") or {}).get("name") if isinstance(config.get("model"), dict) else config.get("model")
    step = ckpt.name.removeprefix("step_").lstrip("0") or "0"
    metrics_file = jsonl_path(run_dir / "metrics.jsonl")  # a finished study run keeps it gzipped
    rows = read_jsonl(metrics_file) if metrics_file.exists() else []
    evals = [row for row in rows if any(k.startswith("eval_") for k in row) and int(row.get("step", 0)) <= int(step)]
    tags = ["rlvr", "reinforcement-learning" if command == "train" else command] + ([algorithm] if algorithm else [])
    front = {"library_name": "transformers", "tags": tags, **({"base_model": base} if base and "/" in str(base) else {})}
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {run_dir.name}", "",
             f"Trained with rlvr (`rlvr {command}`)"
             + (f", algorithm `{algorithm}`" if algorithm else "") + (f", task `{task}`" if task else "")
             + (f", from `{base}`" if base else "") + f"; this is checkpoint step {step}.", ""]
    if evals:
        last = evals[-1]
        lines += [f"Held-out metrics at step {last.get('step')} (`metrics.jsonl` of the run):", "",
                  "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.4g} |" for k, v in last.items() if k.startswith("eval_") and isinstance(v, (int, float))]
        lines.append("")
    lines += ["Run config:", "", "```yaml", yaml.safe_dump(config, sort_keys=False).strip(), "```", ""]
    return "\n".join(lines)
