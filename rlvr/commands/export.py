"""`rlvr export RUN_DIR --out DIR`: the trained policy as a plain Hugging Face model directory.

A run's checkpoints hold either the whole model (full fine-tuning) or a LoRA adapter only; `export`
writes, in both cases, a model that transformers' `from_pretrained` and vLLM load without rlvr or peft:
an adapter is merged into its base model (named by the run's config) first. `--step N` exports that
checkpoint instead of the latest. The directory gets a model card (README.md) with the run's config
and its last held-out metrics (rlvr.train.export).
"""

from __future__ import annotations

import argparse

from rlvr.train.export import export, model_card  # noqa: F401 (model_card: its former home)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a run directory (its latest checkpoint) or one checkpoint directory")
    parser.add_argument("--out", required=True, help="the directory to write the Hugging Face model to")
    parser.add_argument("--step", type=int, default=None, help="export checkpoint step_N (default: the latest)")


def run(args: argparse.Namespace) -> int:
    path = export(args.source, args.out, step=args.step)  # errors: rlvr.cli's one-line wrapper
    print(f"exported: {path}")
    return 0
