"""`rlvr presets`: the algorithm presets and what each sets.

Every cell is read from the registries (rlvr.config.PRESETS, PRESET_SCHEDULES, the resolved config and
rlvr.core.kl.kl_gradient), so the table cannot list what the code does not do. `--markdown` prints the same
rows as a markdown table; the README holds that output, and a test keeps the two equal."""

from __future__ import annotations

import argparse

AGGREGATION_TEXT = {
    "token_mean": "token mean",
    "seq_mean_token_mean": "sequence mean of token means (1/|y|)",
    "seq_mean_token_sum": "per-sequence token sum",
    "seq_mean_token_sum_norm": "per-sequence token sum / max_new_tokens",
}

PAPERS = {
    "reinforce": "Williams 1992",
    "grpo": "DeepSeekMath, arXiv 2402.03300",
    "dr_grpo": "Dr. GRPO, arXiv 2503.20783",
    "dapo": "DAPO, arXiv 2503.14476",
    "gspo": "GSPO, arXiv 2507.18071",
    "cispo": "MiniMax-M1, arXiv 2506.13585",
    "rloo": "Back to Basics, arXiv 2402.14740",
    "remax": "ReMax, arXiv 2310.10505",
    "reinforce_pp": "REINFORCE++, arXiv 2501.03262",
    "ppo": "PPO, arXiv 1707.06347; InstructGPT, arXiv 2203.02155",
    "minirl": "Stabilizing RL with LLMs, arXiv 2512.01374",
}
"""The paper each preset follows (its settings' source is cited where they are set, rlvr.config.presets)."""

COLUMNS = (
    ("preset", "preset"), ("advantage", "advantage"), ("loss", "loss"), ("aggregation", "aggregation"),
    ("update schedule", "schedule"), ("KL (gradient it follows)", "kl"), ("also sets", "also"), ("paper", "paper"),
)
"""(header, row key) of each column, in the order the table and the markdown print them."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="show one preset's full resolved algorithm settings")
    parser.add_argument("--markdown", action="store_true",
                        help="print every preset as a markdown table (the README's table is this output)")


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
            "also": ", ".join(_flat(rest)), "paper": PAPERS.get(name, ""),
        })
    return rows


def _cell(text: str, code: bool = False) -> str:
    text = text.replace("|", "\\|")  # a bare | would end the cell (1/|y|, KL(pi||pi_ref))
    return f"`{text}`" if code and text else text


def markdown_table(rows: list[dict[str, str]] | None = None) -> str:
    """The presets as a markdown table, one row per preset, ending in a newline."""
    rows = preset_rows() if rows is None else rows
    lines = ["| " + " | ".join(label for label, _ in COLUMNS) + " |",
             "|" + " --- |" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row[key], code=key == "preset") for _, key in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    import yaml
    from rich.console import Console
    from rich.table import Table

    from rlvr.config import PRESETS, resolve

    console = Console()
    if args.markdown:
        if args.name:
            console.print(f"[red]error:[/] --markdown prints every preset; drop {args.name!r} "
                          f"(or drop --markdown to see that preset's settings)")
            return 2
        print(markdown_table(), end="")
        return 0
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
        # A table of eight columns is unreadable in a narrow terminal: one block per preset instead.
        console.print("[bold]rlvr presets[/] (override any part: algorithm.<key>=value, train.epochs=..., "
                      "train.mini_batches=...)\n")
        for row in rows:
            console.print(f"[bold]{row['preset']}[/]", highlight=False)
            for label, key in (("advantage", "advantage"), ("loss", "loss"), ("aggregation", "aggregation"),
                               ("update schedule", "schedule"), ("KL", "kl"), ("also sets", "also"),
                               ("paper", "paper")):
                if row[key]:
                    console.print(f"  {label:<16}{row[key]}", highlight=False, soft_wrap=True)
        return 0
    table = Table(title="rlvr presets (override any part: algorithm.<key>=value, train.epochs=..., train.mini_batches=...)")
    for label, _ in COLUMNS:
        table.add_column(label, overflow="fold", no_wrap=label == "preset")
    for row in rows:
        table.add_row(*(row[key] for _, key in COLUMNS))
    console.print(table)
    return 0
