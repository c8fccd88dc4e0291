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
    "analyze": ("analyze", "analyse a model: entropy of each layer's internal policy (logit lens, BuPO)"),
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
    if argv is None and sys.platform.startswith("linux"):  # the command line, not a call from Python
        from rlvr.train.memory import reexec_with_allocator

        reexec_with_allocator(sys.argv[1:])  # mimalloc where installed, else glibc with huge pages on request
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # anywhere on the line: full tracebacks instead of one-line errors
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    # First pass: find the subcommand without parsing its own arguments.
    known, _ = parser.parse_known_args(argv)
    if known.command is None:
        parser.print_help()
        return 0
    from rlvr.core.plugins import load_plugins

    try:
        load_plugins()  # RLVR_PLUGINS: before any config is built, so that what they register has its section
    except Exception as err:  # noqa: BLE001 - a broken plugin is the user's input
        if debug:
            raise
        print(f"rlvr {known.command}: {describe_error(err)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"rlvr.commands.{known._module}")
    sub = argparse.ArgumentParser(prog=f"rlvr {known.command}", description=COMMANDS[known.command][1],
                                  epilog="--debug (anywhere): show the full traceback of an error")
    module.add_arguments(sub)
    rest = argv[argv.index(known.command) + 1 :]
    try:
        args = sub.parse_intermixed_args(rest)  # flags and key=value overrides in any order
    except TypeError:  # a command with sub-commands of its own cannot intermix
        args = sub.parse_args(rest)
    if not debug:
        quiet_third_party_progress()
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # noqa: BLE001 - the one error wrapper of every command
        if debug:
            raise
        print(f"rlvr {known.command}: {describe_error(err)}", file=sys.stderr)
        return 2 if is_input_error(err) else 1


INPUT_ERRORS = (ValueError, KeyError, LookupError, OSError, ImportError, TypeError)
"""Errors of the user's input (config, data, paths, a missing package): exit status 2; others exit 1."""


def is_input_error(err: BaseException) -> bool:
    """The user's input is at fault (exit 2): a config, data, path or package error, or one marked `user_error`."""
    return isinstance(err, INPUT_ERRORS) or bool(getattr(err, "user_error", False))


def describe_error(err: BaseException) -> str:
    """One line: what went wrong (the exception's own message, which names the file and the fix)."""
    message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    first = message.strip().splitlines()[0] if message.strip() else type(err).__name__
    if isinstance(err, FloatingPointError) or getattr(err, "stopped", False):
        return f"stopped: {first}"  # a run that stopped itself (it says why), not a bug
    known = is_input_error(err)
    hint = "" if known else f" ({type(err).__name__}; run again with --debug for the traceback)"
    return f"error: {first}{hint}"


def quiet_third_party_progress() -> None:
    """No download / loading / writing progress bars from transformers and huggingface_hub."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        import transformers

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    except Exception:  # noqa: BLE001 - transformers missing or older: nothing to quiet
        pass


if __name__ == "__main__":
    sys.exit(main())
