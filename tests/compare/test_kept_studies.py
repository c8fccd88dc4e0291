"""The studies kept in docs/studies: their reports are what `rlvr compare --report` makes from the files
kept with them (study.yaml, each run's config.yaml and metrics.jsonl.gz, eval.json, grad_variance*.json),
and what rerunning a study makes besides (samples, logs, plots, weights) stays out of git."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from rlvr.compare.report import report_json, report_markdown, summarize_study
from rlvr.compare.study import study_from_dir

REPO = Path(__file__).resolve().parents[2]
STUDIES = sorted(p.parent for p in (REPO / "docs" / "studies").glob("*/report.json"))


def _git(*args: str) -> str | None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        return None
    done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    return done.stdout if done.returncode in (0, 1) else None


def test_every_study_is_kept():
    assert len(STUDIES) >= 9


@pytest.mark.parametrize("folder", STUDIES, ids=[p.name for p in STUDIES])
def test_the_report_is_what_the_kept_runs_give(folder):
    study = study_from_dir(folder)
    summary = summarize_study(study)
    assert report_json(summary) == (folder / "report.json").read_text()
    figures = {metric: folder / "figures" / f"{metric}.png" for metric in summary["curves"]}
    assert report_markdown(study, summary, figures) == (folder / "report.md").read_text()
    assert all(path.exists() for path in figures.values())


def test_what_a_rerun_makes_besides_stays_out_of_git():
    run = "docs/studies/baselines/grpo/seed0"
    made = [f"{run}/samples.jsonl", f"{run}/metrics.jsonl", f"{run}/plots/reward.png", "docs/studies/baselines/grpo/seed0.log",
            f"{run}/checkpoints/latest", f"{run}/model/policy.pt", "docs/studies/sft_vs_rl/grpo/seed0/eval/one-digit.log",
            "docs/studies/sft_vs_rl/grpo/seed0/eval/one-digit/eval_samples.jsonl"]
    ignored = _git("check-ignore", "--no-index", *made)
    if ignored is None:
        pytest.skip("not a git checkout")
    assert sorted(ignored.split()) == sorted(made)
    kept = [f"{run}/metrics.jsonl.gz", f"{run}/config.yaml", f"{run}/DONE", "docs/studies/baselines/report.md",
            "docs/studies/sft_vs_rl/grpo/seed0/eval/one-digit/eval.json", "docs/studies/baselines/figures/entropy.png"]
    assert _git("check-ignore", "--no-index", *kept) == ""


def test_the_kept_studies_stay_under_3_mb():
    tracked = _git("ls-files", "-z", "docs/studies")
    if tracked is None:
        pytest.skip("not a git checkout")
    paths = [REPO / p for p in tracked.split("\0") if p and (REPO / p).exists()]
    assert sum(p.stat().st_size for p in paths) < 3_000_000
