"""The `rlvr` command line: `rlvr train | eval | sft | expert-iter | plot | presets | models | export | compare`.

Each subcommand lives in `rlvr/commands/<name>.py` and exposes `add_arguments(parser)` and
`run(args) -> int`. They are imported only when their subcommand runs, so `rlvr --help` stays fast
and a missing optional dependency of one command never breaks another.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import rlvr

# subcommand -> (module under rlvr.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "run an RL recipe (no recipe: the default GRPO recipe on the embedded model)"),
    "eval": ("evaluate", "evaluate a model or run directory on a task: pass@k, maj@n, lengths, entropy"),
    "sft": ("sft", "supervised fine-tuning on (prompt, response) JSONL"),
    "expert-iter": ("expert_iter", "expert iteration (STaR): sample, keep verified answers, fine-tune, repeat"),
    "plot": ("plot", "write PNG curves of a run directory to RUN_DIR/plots/"),
    "presets": ("presets", "list the algorithm presets and what each sets"),
    "models": ("models", "list, pull and inspect embedded models"),
    "compare": ("compare", "run a study (variants x seeds of a recipe) and report curves, intervals, paired differences"),
    "export": ("export", "write a run's trained policy as a plain Hugging Face model (LoRA adapters merged)"),
}


def _available_commands() -> dict[str, tuple[str, str]]:
    available = {}
    for name, (module, help_text) in COMMANDS.items():
        if importlib.util.find_spec(f"rlvr.commands.{module}") is not None:
            available[name] = (module, help_text)
    return available


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlvr",
        description="Reinforcement learning on language models with verifiable rewards.",
    )
    parser.add_argument("--version", action="version", version=f"rlvr {rlvr.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in _available_commands().items():
        p = sub.add_parser(name, help=help_text, description=help_text, add_help=False)
        p.set_defaults(_module=module)
        # Arguments are added lazily (see main) only for the command being run.
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # First pass: find the subcommand without parsing its own arguments.
    known, _ = parser.parse_known_args(argv)
    if known.command is None:
        parser.print_help()
        return 0
    module = importlib.import_module(f"rlvr.commands.{known._module}")
    sub = argparse.ArgumentParser(prog=f"rlvr {known.command}", description=COMMANDS[known.command][1])
    module.add_arguments(sub)
    args = sub.parse_args(argv[argv.index(known.command) + 1 :])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
