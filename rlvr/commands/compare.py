"""`rlvr compare STUDY.yaml [--jobs N]` and `rlvr compare --report STUDY_DIR` (see rlvr.compare)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", nargs="?", help="a study file (YAML: base recipe, variants, seeds)")
    parser.add_argument("--report", metavar="STUDY_DIR", help="only re-render report.md and figures from existing runs")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time, each pinned to its share of the cores")
    parser.add_argument("--out", help="the study directory (default: the study's `out`, else studies/<name>)")


def run(args: argparse.Namespace) -> int:
    from rlvr.compare import StudyError, load_study, run_study, study_from_dir, write_report

    try:
        if args.report:
            study = study_from_dir(args.report)
        elif args.study:
            if args.jobs < 1:
                raise StudyError("--jobs must be >= 1")
            study = load_study(args.study, out=args.out)
            run_study(study, jobs=args.jobs)
        else:
            raise StudyError("give a study file, or --report STUDY_DIR")
    except StudyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"report: {write_report(study)}")
    return 0
