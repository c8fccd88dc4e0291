"""`rlvr compare`: a tiny study of 2 variants x 2 seeds on the tiny model, its report checked against
the run directories."""

from __future__ import annotations

import json
import math

import pytest

from rlvr.cli import main
from rlvr.compare.report import mean_interval
from rlvr.eval.variance import t975
from rlvr.logging.jsonl import read_jsonl


def study_file(tmp_path, tiny_dir, **extra):
    data = {
        "name": "tiny",
        "base": "default",
        "overrides": [f"model.name={tiny_dir}", "model.device=cpu", "task.name=symbol", "task.template=chat",
                      "rollout.prompts_per_step=4", "rollout.group_size=4", "rollout.max_new_tokens=4",
                      "optim.lr=1e-2", "train.steps=3", "eval.every=3", "eval.size=8", "checkpoint.every=0"],
        "seeds": [0, 1],
        "variants": [{"label": "grpo", "overrides": ["algorithm.preset=grpo"]},
                     {"label": "rloo", "overrides": ["algorithm.preset=rloo"]}],
        "metrics": ["reward_mean", "eval_accuracy"],
        "out": str(tmp_path / "study"),
        **extra,
    }
    import yaml

    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_t_quantiles_and_intervals():
    assert t975(1) == 12.706 and t975(4) == 2.776
    assert abs(t975(60) - 2.000) < 2e-3 and abs(t975(1000) - 1.962) < 1e-3
    m = mean_interval([1.0, 2.0, 3.0])
    assert m["mean"] == 2.0 and m["high"] == pytest.approx(2.0 + 4.303 * 1.0 / math.sqrt(3))
    assert math.isnan(mean_interval([1.0])["low"])
    # all seeds equal: no zero-width interval claiming certainty; rates clipped to [0, 1]
    assert math.isnan(mean_interval([0.0, 0.0, 0.0], bounded=True)["high"])
    clipped = mean_interval([0.0, 0.1], bounded=True)
    assert clipped["low"] == 0.0 and clipped["high"] < 1.0


def test_tiny_study_runs_resumes_and_reports(tmp_path, tiny_dir, capsys):
    path = study_file(tmp_path, tiny_dir)
    assert main(["compare", str(path), "--jobs", "2"]) == 0
    out = tmp_path / "study"
    for label in ("grpo", "rloo"):
        for seed in (0, 1):
            run = out / label / f"seed{seed}"
            # a finished run keeps its metrics gzipped, the plain file gone
            assert (run / "DONE").exists() and (run / "metrics.jsonl.gz").exists()
            assert not (run / "metrics.jsonl").exists()
    report = json.loads((out / "report.json").read_text())
    # numbers checked against the run directories
    finals = {}
    for label in ("grpo", "rloo"):
        for seed in (0, 1):
            rows = read_jsonl(out / label / f"seed{seed}" / "metrics.jsonl.gz")
            finals[label, seed] = [r["eval_accuracy"] for r in rows if "eval_accuracy" in r][-1]
        want = mean_interval([finals[label, 0], finals[label, 1]])
        got = report["final"]["eval_accuracy"][label]
        assert got["mean"] == pytest.approx(want["mean"]) and got["n"] == 2
    diff = report["paired"]["eval_accuracy"]["rloo"]
    assert diff["mean"] == pytest.approx(((finals["rloo", 0] - finals["grpo", 0]) + (finals["rloo", 1] - finals["grpo", 1])) / 2)
    from PIL import Image

    with Image.open(out / "figures" / "reward_mean.png") as figure:  # 6 x 4 in at 100 dpi, a palette of <= 256
        assert figure.size == (600, 400) and figure.mode == "P"
    text = (out / "report.md").read_text()
    assert "Paired differences against `grpo`" in text and "figures/eval_accuracy.png" in text
    # the seeds are really different runs, and the two variants really differ
    rows = {k: read_jsonl(out / k[0] / f"seed{k[1]}" / "metrics.jsonl.gz") for k in finals}
    assert rows["grpo", 0][1] != rows["grpo", 1][1]
    # a second call skips the finished runs; --report re-renders
    capsys.readouterr()
    assert main(["compare", str(path)]) == 0
    assert "4 run(s) already done, skipped" in capsys.readouterr().out
    (out / "report.md").unlink()
    assert main(["compare", "--report", str(out)]) == 0
    assert (out / "report.md").exists()
    # --grad-variance: each variant's estimator on the same policy and prompts, rendered in the report
    assert main(["compare", str(path), "--grad-variance", "--batches", "2"]) == 0
    gv = json.loads((out / "grad_variance.json").read_text())
    assert set(gv["estimators"]) == {"grpo", "rloo"}
    assert main(["compare", "--report", str(out)]) == 0
    assert "## Gradient variance" in (out / "report.md").read_text()


def test_bad_study_is_rejected_before_any_run(tmp_path, tiny_dir, capsys):
    path = study_file(tmp_path, tiny_dir, variants=[{"label": "x", "overrides": ["rollout.group_sise=4"]}])
    assert main(["compare", str(path)]) == 2
    err = capsys.readouterr().err
    assert "variant 'x'" in err and "did you mean 'rollout.group_size'" in err
    assert not (tmp_path / "study" / "x").exists()


def test_a_study_file_kept_in_its_own_directory_is_not_overwritten(tmp_path, tiny_dir):
    """The study directory records its study (for --report); a study file that lives there is that record."""
    out = tmp_path / "study"
    out.mkdir()
    source = study_file(tmp_path, tiny_dir, seeds=[0], variants=[{"label": "grpo", "overrides": ["train.steps=1"]}])
    text = "# how to run it, why these settings\n" + source.read_text()
    (out / "study.yaml").write_text(text)
    assert main(["compare", str(out / "study.yaml")]) == 0
    assert (out / "study.yaml").read_text() == text
    assert main(["compare", "--report", str(out)]) == 0


def test_a_study_can_set_expert_iteration_against_rl_and_evaluate_on_another_split(tmp_path, tiny_dir):
    """Variants of another command on their own base recipe, and held-out evaluations of every final model
    whose numbers join the report (checked against each run's eval.json)."""
    import yaml

    ei = tmp_path / "ei.yaml"
    ei.write_text(yaml.safe_dump({"model": {"name": str(tiny_dir), "device": "cpu"},
                                  "task": {"name": "symbol", "template": "chat"},
                                  "expert_iter": {"rounds": 1, "prompts": 4, "k": 4, "max_new_tokens": 4,
                                                  "keep_truncated": True, "eval_size": 4, "sft": {"lr": 1e-2}}}))
    rl = ["algorithm.preset=grpo", f"model.name={tiny_dir}", "model.device=cpu", "task.name=symbol",
          "task.template=chat", "rollout.prompts_per_step=4", "rollout.group_size=4", "rollout.max_new_tokens=4",
          "optim.lr=1e-2", "train.steps=2", "eval.every=0", "checkpoint.every=0"]
    path = study_file(tmp_path, tiny_dir, overrides=[], seeds=[0, 1],
                      variants=[{"label": "grpo", "overrides": rl},
                                {"label": "ei", "command": "expert-iter", "base": "ei.yaml", "overrides": []}],
                      evaluate=[{"label": "held-out", "overrides": ["task.name=symbol", "limit=6", "max_new_tokens=4"],
                                 "metrics": ["pass@1"]}],
                      metrics=["reward_mean"])
    assert main(["compare", str(path)]) == 0
    out = tmp_path / "study"
    report = json.loads((out / "report.json").read_text())
    for label in ("grpo", "ei"):
        values = [json.loads((out / label / f"seed{s}" / "eval" / "held-out" / "eval.json").read_text())["metrics"]["pass@1"]
                  for s in (0, 1)]
        assert report["final"]["held-out:pass@1"][label]["mean"] == pytest.approx(sum(values) / 2)
    assert "ei" in report["paired"]["held-out:pass@1"]
    assert "held-out:pass@1" in (out / "report.md").read_text()
    assert "`rlvr expert-iter`" in (out / "report.md").read_text()
    # the recorded study re-renders the same report
    assert main(["compare", "--report", str(out)]) == 0
    assert json.loads((out / "report.json").read_text())["final"] == report["final"]
    # bad input is refused before any run
    bad = study_file(tmp_path, tiny_dir, variants=[{"label": "x", "command": "sft"}])
    assert main(["compare", str(bad)]) == 2


def test_grad_variance_measures_the_learned_critic_with_the_critic_trained_alongside(tmp_path, tiny_dir):
    path = study_file(tmp_path, tiny_dir, seeds=[0], metrics=["reward_mean"],
                      variants=[{"label": "rloo", "overrides": ["algorithm.preset=rloo"]},
                                {"label": "critic", "overrides": ["algorithm.preset=reinforce", "algorithm.advantage=gae",
                                                                  "algorithm.critic.enabled=true"]}])
    out = tmp_path / "study"
    assert main(["compare", str(path), "--grad-variance", "--batches", "2"]) == 0
    start = json.loads((out / "grad_variance.json").read_text())
    assert set(start["estimators"]) == {"rloo"} and "no trained critic" in start["critic"]
    assert main(["compare", str(path)]) == 0
    ckpt = out / "critic" / "seed0" / "checkpoints" / "step_000003" / "model"
    assert main(["compare", str(path), "--grad-variance", "--batches", "2", "--checkpoint", str(ckpt)]) == 0
    trained = json.loads((out / "grad_variance_step_000003.json").read_text())
    assert set(trained["estimators"]) == {"rloo", "gae"} and "critic trained with this policy" in trained["critic"]
    assert trained["estimators"]["gae"]["trace_cov"]["mean"] > 0
    assert main(["compare", "--report", str(out)]) == 0
    assert "Critic: gae uses the critic trained" in (out / "report.md").read_text()


def test_report_re_renders_a_study_file_without_its_optional_keys(tmp_path):
    """--report on a directory whose study.yaml is the hand-written study file, which may leave out overrides,
    seeds and metrics (it failed with "error: overrides" before)."""
    import yaml

    from rlvr.compare.study import study_from_dir

    out = tmp_path / "s"
    out.mkdir()
    (out / "study.yaml").write_text(yaml.safe_dump({"name": "s", "variants": [
        {"label": "a", "overrides": []}, {"label": "b", "command": "expert-iter", "base": "ei.yaml"}]}))
    study = study_from_dir(out)
    assert study.overrides == [] and study.seeds == [0] and study.base == "default"
    assert study.variants[1].base == str((out / "ei.yaml").resolve())
    assert main(["compare", "--report", str(out)]) == 0
