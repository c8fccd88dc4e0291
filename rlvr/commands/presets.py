"""`rlvr presets`: the algorithm presets and what each sets."""

from __future__ import annotations

import argparse

AGGREGATION_TEXT = {
    "token_mean": "token mean",
    "seq_mean_token_mean": "sequence mean of token means (1/|y|)",
    "seq_mean_token_sum": "per-sequence token sum",
    "seq_mean_token_sum_norm": "per-sequence token sum / max_new_tokens",
}


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


def preset_rows() -> list[dict[str, str]]:
    """One row per preset: what it computes, its update schedule and the KL gradient it follows."""
    from rlvr.config import PRESETS, resolve
    from rlvr.core.kl import kl_gradient

    rows = []
    for name, spec in PRESETS.items():
        cfg = resolve({"algorithm": {"preset": name}})
        alg, train = cfg.algorithm, cfg.train
        loss = spec.get("loss", {})
        advantage = spec.get("advantage", "")
        if isinstance(advantage, dict):
            advantage = advantage["name"] + "".join(f" {k}={v}" for k, v in advantage.items() if k != "name")
        loss_txt = loss.get("name", "") + "".join(f" {k}={v}" for k, v in loss.items() if k != "name")
        schedule = f"{train.epochs} epoch{'s' if train.epochs > 1 else ''} x {train.mini_batches} mini-batch"
        schedule += "es" if train.mini_batches > 1 else ""
        schedule += "" if train.epochs * train.mini_batches > 1 else " (on-policy)"
        kl_spec = spec.get("kl", {})
        if kl_spec.get("coef", None) == 0.0 or "estimator" not in kl_spec:
            kl = "off"
        else:
            est, place = alg.kl.estimator, alg.kl.placement
            follows = f"{est} in the {place}: {kl_gradient(est, place)}"
            kl = (f"{follows}, coef {alg.kl.coef:g}" if alg.kl.coef > 0 else
                  f"off (kl.coef 0); with algorithm.kl.coef > 0: {follows}")
        rest = {k: v for k, v in spec.items() if k not in ("advantage", "loss", "aggregation", "kl")}
        rows.append({
            "preset": name, "advantage": advantage, "loss": loss_txt,
            "aggregation": AGGREGATION_TEXT.get(alg.aggregation, alg.aggregation), "schedule": schedule, "kl": kl,
            "also": ", ".join(_flat(rest)),
        })
    return rows


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
        train = {k: getattr(cfg.train, k) for k in ("epochs", "mini_batches")}
        print(yaml.safe_dump({"algorithm": cfg.algorithm.model_dump(mode="json"), "train": train}, sort_keys=False), end="")
        return 0
    rows = preset_rows()
    if console.width < 140:
        # A table of seven columns is unreadable in a narrow terminal: one block per preset instead.
        console.print("[bold]rlvr presets[/] (override any part: algorithm.<key>=value, train.epochs=..., "
                      "train.mini_batches=...)\n")
        for row in rows:
            console.print(f"[bold]{row['preset']}[/]", highlight=False)
            for label, key in (("advantage", "advantage"), ("loss", "loss"), ("aggregation", "aggregation"),
                               ("update schedule", "schedule"), ("KL", "kl"), ("also sets", "also")):
                if row[key]:
                    console.print(f"  {label:<16}{row[key]}", highlight=False, soft_wrap=True)
        return 0
    table = Table(title="rlvr presets (override any part: algorithm.<key>=value, train.epochs=..., train.mini_batches=...)")
    for col in ("preset", "advantage", "loss", "aggregation", "update schedule", "KL (gradient it follows)", "also sets"):
        table.add_column(col, overflow="fold", no_wrap=col == "preset")
    for row in rows:
        table.add_row(row["preset"], row["advantage"], row["loss"], row["aggregation"], row["schedule"], row["kl"], row["also"])
    console.print(table)
    return 0
