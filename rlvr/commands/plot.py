"""`rlvr plot RUN_DIR`: PNG curves to RUN_DIR/plots/."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a run directory of `rlvr train`")


def run(args: argparse.Namespace) -> int:
    from rlvr.logging.plots import plot_run

    try:
        paths = plot_run(args.run_dir)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}")
        return 2
    for p in paths:
        print(p)
    return 0
