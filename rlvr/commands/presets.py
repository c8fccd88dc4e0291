"""`rlvr presets`: the algorithm presets and what each sets."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="show one preset's full resolved algorithm settings")


def _flat(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _flat(v, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}={v}")
    return out


def run(args: argparse.Namespace) -> int:
    import yaml
    from rich.console import Console
    from rich.table import Table

    from rlvr.config import PRESETS, resolve

    console = Console()
    if args.name:
        if args.name not in PRESETS:
            from rlvr.core.registry import unknown_name_message

            console.print(f"[red]error:[/] {unknown_name_message('preset', args.name, PRESETS)}")
            return 2
        cfg = resolve({"algorithm": {"preset": args.name}})
        print(yaml.safe_dump({"algorithm": cfg.algorithm.model_dump(mode="json")}, sort_keys=False), end="")
        return 0
    table = Table(title="rlvr presets (override any part: algorithm.<key>=value)")
    for col in ("preset", "advantage", "loss", "aggregation", "also sets"):
        table.add_column(col)
    for name, spec in PRESETS.items():
        loss = spec.get("loss", {})
        loss_txt = loss.get("name", "") + "".join(f" {k}={v}" for k, v in loss.items() if k != "name")
        rest = {k: v for k, v in spec.items() if k not in ("advantage", "loss", "aggregation")}
        table.add_row(name, spec.get("advantage", ""), loss_txt, spec.get("aggregation", ""), ", ".join(_flat(rest)))
    console.print(table)
    return 0
