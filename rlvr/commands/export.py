"""`rlvr export RUN_DIR --out DIR`: the trained policy as a plain Hugging Face model directory.

A run's checkpoints hold either the whole model (full fine-tuning) or a LoRA adapter only; `export`
writes, in both cases, a model that transformers' `from_pretrained` and vLLM load without rlvr or peft:
an adapter is merged into its base model (named by the run's config) first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a run directory (its latest checkpoint) or one checkpoint directory")
    parser.add_argument("--out", required=True, help="the directory to write the Hugging Face model to")


def export(source: str | Path, out: str | Path) -> Path:
    """Write the policy of `source` (run directory or checkpoint) to `out` as a plain HF model."""
    from rlvr.config import load_recipe, resolve
    from rlvr.models import load_model, save_model
    from rlvr.models.lora import is_adapter_dir, load_adapter, merged_model
    from rlvr.train.checkpoint import latest_checkpoint

    source = Path(source)
    if (source / "model").is_dir():
        ckpt, run_dir = source, source.parent.parent
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
    return save_model(model, tokenizer, out)


def run(args: argparse.Namespace) -> int:
    try:
        path = export(args.source, args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"exported: {path}")
    return 0
