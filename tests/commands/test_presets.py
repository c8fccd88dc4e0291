"""`rlvr presets --markdown`: every preset from the registries, and the README's table equal to it."""

from __future__ import annotations

import re
from pathlib import Path

from rlvr.cli import main
from rlvr.commands.presets import COLUMNS, PAPERS, markdown_table, preset_rows
from rlvr.config import PRESETS

README = Path(__file__).resolve().parents[2] / "README.md"
BEGIN, END = "<!-- rlvr presets --markdown: begin -->", "<!-- rlvr presets --markdown: end -->"


def _cells(line: str) -> list[str]:
    """The cells of one markdown table row, with escaped pipes kept inside their cell."""
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def test_markdown_prints_one_row_per_preset_from_the_registries(capsys):
    assert main(["presets", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out == markdown_table()
    lines = out.splitlines()
    assert _cells(lines[0]) == [label for label, _ in COLUMNS]
    assert lines[1] == "|" + " --- |" * len(COLUMNS)
    rows = {c[0].strip("`"): dict(zip([k for _, k in COLUMNS], c)) for c in map(_cells, lines[2:])}
    assert list(rows) == list(PRESETS)
    assert all(len(_cells(line)) == len(COLUMNS) for line in lines[2:])
    # What the presets set, read back through the table (rlvr.config.presets, PRESET_SCHEDULES, kl_gradient).
    assert rows["dapo"]["loss"] == "ppo_clip clip_low=0.2 clip_high=0.28"
    assert rows["dapo"]["schedule"] == "1 epoch x 16 mini-batches"
    assert rows["dapo"]["also"] == "dynamic_sampling.enabled=True, overlong.enabled=True"
    assert rows["ppo"]["advantage"] == "gae lam=0.95" and rows["ppo"]["schedule"] == "4 epochs x 1 mini-batch"
    assert rows["grpo"]["aggregation"] == "sequence mean of token means (1/|y|)"
    assert rows["grpo"]["kl"].endswith("k3 in the loss: forward KL(pi_ref||pi) per visited state")
    assert rows["rloo"]["kl"].endswith("k1 in the reward: reverse KL(pi||pi_ref) of the whole response")
    assert rows["reinforce"]["schedule"] == "1 epoch x 1 mini-batch (on-policy)" and rows["reinforce"]["kl"] == "off"


def test_every_preset_names_its_paper():
    assert set(PAPERS) == set(PRESETS), "add the paper of a new preset to rlvr.commands.presets.PAPERS"
    assert all(row["paper"] for row in preset_rows())


def test_pipes_inside_a_cell_are_escaped():
    row = {key: "" for _, key in COLUMNS} | {"preset": "p", "aggregation": "1/|y|"}
    line = markdown_table([row]).splitlines()[2]
    assert "1/\\|y\\|" in line and len(_cells(line)) == len(COLUMNS)


def test_markdown_with_a_name_is_refused(capsys):
    assert main(["presets", "grpo", "--markdown"]) == 2
    out = capsys.readouterr().out
    assert "--markdown prints every preset; drop 'grpo'" in out


def test_readme_table_is_the_command_output():
    text = README.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1, f"README.md must hold one {BEGIN} ... {END} block"
    block = text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"
    assert block == markdown_table(), "README's presets table is stale: paste `rlvr presets --markdown` between the markers"
