"""A study: one base recipe, variants (labelled sets of overrides), seeds; every (variant, seed) an
ordinary run directory.

Study file (YAML):

    name: baselines-tiny
    base: default                  # a bundled recipe name or a YAML path (relative to the study file)
    overrides: [train.steps=8]     # applied to every run
    seeds: [0, 1, 2]
    variants:
      - {label: grpo, overrides: [algorithm.preset=grpo]}
      - {label: rloo, overrides: [algorithm.preset=rloo]}
    metrics: [eval_accuracy, reward_mean]   # optional: the curves and final values to report
    out: studies/baselines-tiny             # optional; default studies/<name>

A variant may run another command than `rlvr train` on its own base recipe, e.g. expert iteration
against RL from the same model and problems:

      - {label: expert-iter, command: expert-iter, base: ei.yaml, overrides: [expert_iter.rounds=2]}

and `evaluate` adds held-out evaluations of every finished run's final model (`rlvr eval RUN_DIR
OVERRIDES`, written to RUN_DIR/eval/<label>/), whose `metrics` (default pass@1) join the final values and
the paired differences as `<label>:<metric>`; e.g. a harder split than the training one:

    evaluate:
      - {label: two-digit, overrides: [task.name=arithmetic, task.kwargs.digits=2, limit=100], metrics: [pass@1]}

Runs live in OUT/<label>/seed<k>/. A run that finished has a `DONE` file and is skipped, so an
interrupted study resumes where it stopped (a run interrupted mid-way resumes from its checkpoint).
Every run's config is resolved before any run starts, so a bad override fails the study up front.
A finished run's metrics.jsonl is gzipped to metrics.jsonl.gz (what the report reads, with config.yaml and
the evaluations' eval.json): a study kept in the repository keeps those, and its samples, logs, plots and
weights can be left out of it, since rerunning the study makes them again.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlvr.logging.jsonl import compress_jsonl

DEFAULT_METRICS = ["eval_accuracy", "eval_accuracy_greedy", "reward_mean", "accuracy", "entropy", "response_len_mean"]
DONE = "DONE"


COMMANDS = ("train", "expert-iter")


@dataclass
class Variant:
    label: str
    overrides: list[str] = field(default_factory=list)
    command: str = "train"
    """The rlvr command that makes the run: train or expert-iter."""
    base: str | None = None
    """This variant's own base recipe; None: the study's."""


@dataclass
class Evaluation:
    label: str
    overrides: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=lambda: ["pass@1"])


@dataclass
class Study:
    name: str
    base: str
    variants: list[Variant]
    seeds: list[int]
    overrides: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    out: Path = Path("studies")
    source: Path | None = None
    evaluations: list[Evaluation] = field(default_factory=list)

    def base_of(self, variant: Variant) -> str:
        return variant.base or self.base

    def eval_dir(self, variant: Variant, seed: int, evaluation: Evaluation) -> Path:
        return self.run_dir(variant, seed) / "eval" / evaluation.label

    def run_dir(self, variant: Variant, seed: int) -> Path:
        return self.out / variant.label / f"seed{seed}"

    def run_overrides(self, variant: Variant, seed: int) -> list[str]:
        return [*self.overrides, *variant.overrides, f"seed={seed}", f"run_dir={self.run_dir(variant, seed)}"]

    def runs(self) -> list[tuple[Variant, int]]:
        return [(v, s) for v in self.variants for s in self.seeds]


class StudyError(ValueError):
    """A study file that cannot run; the message says what to change."""


_LABEL = re.compile(r"^[A-Za-z0-9_.+-]+$")


def load_study(path: str | Path, out: str | Path | None = None) -> Study:
    """Read and check a study file (every run's config is resolved here, before any work)."""
    from rlvr.config import ConfigError, load_recipe, resolve

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise StudyError(f"cannot read study {path}: {err}") from None
    if not isinstance(data, dict):
        raise StudyError(f"study {path} must be a YAML mapping")
    known = {"name", "base", "overrides", "seeds", "variants", "metrics", "out", "evaluate"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise StudyError(f"study {path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    variants_raw = data.get("variants") or []
    if not isinstance(variants_raw, list) or not variants_raw:
        raise StudyError(f"study {path}: 'variants' must be a non-empty list of {{label, overrides}}")
    variants = []
    for i, v in enumerate(variants_raw):
        if not isinstance(v, dict) or "label" not in v:
            raise StudyError(f"study {path}: variant {i} needs a 'label'")
        label = str(v["label"])
        if not _LABEL.match(label):
            raise StudyError(f"study {path}: variant label {label!r} must use letters, digits and _ . + - only")
        extra = set(v) - {"label", "overrides", "command", "base"}
        if extra:
            raise StudyError(f"study {path}: variant {label!r} has unknown key(s) {', '.join(sorted(extra))}")
        command = str(v.get("command", "train"))
        if command not in COMMANDS:
            raise StudyError(f"study {path}: variant {label!r}: command {command!r} is not one of {', '.join(COMMANDS)}")
        variants.append(Variant(label, [str(o) for o in v.get("overrides") or []], command,
                                _recipe_path(v["base"], path) if v.get("base") else None))
    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels):
        raise StudyError(f"study {path}: variant labels must be distinct, got {labels}")
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise StudyError(f"study {path}: 'seeds' must be a non-empty list of integers >= 0")
    base = _recipe_path(data.get("base", "default"), path)
    evaluations = []
    for i, e in enumerate(data.get("evaluate") or []):
        if not isinstance(e, dict) or "label" not in e or set(e) - {"label", "overrides", "metrics"}:
            raise StudyError(f"study {path}: evaluate[{i}] must be {{label, overrides, metrics}}")
        if not _LABEL.match(str(e["label"])):
            raise StudyError(f"study {path}: evaluation label {e['label']!r} must use letters, digits and _ . + - only")
        evaluations.append(Evaluation(str(e["label"]), [str(o) for o in e.get("overrides") or []],
                                      [str(m) for m in e.get("metrics") or ["pass@1"]]))
    name = str(data.get("name") or path.stem)
    out_dir = Path(out) if out is not None else Path(data.get("out") or Path("studies") / name)
    study = Study(name=name, base=base, variants=variants, seeds=list(seeds),
                  overrides=[str(o) for o in data.get("overrides") or []],
                  metrics=[str(m) for m in data.get("metrics") or DEFAULT_METRICS], out=out_dir, source=path,
                  evaluations=evaluations)
    from rlvr.config import resolve_as
    from rlvr.config.commands import EvalRunConfig, ExpertIterRunConfig

    try:
        for variant, seed in study.runs():
            recipe = load_recipe(study.base_of(variant))
            if variant.command == "train":
                resolve(recipe, study.run_overrides(variant, seed))
            else:
                resolve_as(ExpertIterRunConfig, recipe, study.run_overrides(variant, seed))
    except (ConfigError, ValueError) as err:
        raise StudyError(f"study {path}, variant {variant.label!r}: {err}") from None
    for evaluation in evaluations:
        try:
            resolve_as(EvalRunConfig, {}, ["model.name=RUN_DIR", *evaluation.overrides])
        except (ConfigError, ValueError) as err:
            raise StudyError(f"study {path}, evaluation {evaluation.label!r}: {err}") from None
    return study


def _recipe_path(base: Any, study_path: Path) -> str:
    """A recipe name, or a YAML path relative to the study file."""
    base = str(base)
    if base.endswith((".yaml", ".yml")) and not Path(base).is_absolute():
        base = str((study_path.parent / base).resolve())
    return base


def is_done(run_dir: Path) -> bool:
    return (run_dir / DONE).exists()


def run_study(study: Study, *, jobs: int = 1, log=print) -> list[Path]:
    """Run every (variant, seed) not yet done, `jobs` at a time, each pinned to its share of the cores."""
    study.out.mkdir(parents=True, exist_ok=True)
    record = study.out / "study.yaml"
    if not (study.source is not None and record.exists() and Path(study.source).resolve() == record.resolve()):
        record.write_text(yaml.safe_dump(_study_record(study), sort_keys=False))  # (never over the study file itself)
    todo = [(v, s) for v, s in study.runs() if not is_done(study.run_dir(v, s))]
    skipped = len(study.runs()) - len(todo)
    if skipped:
        log(f"{skipped} run(s) already done, skipped")
    _run_jobs([_run_job(study, v, s) for v, s in todo], jobs, log)
    evals = [_eval_job(study, v, s, e) for v, s in study.runs() for e in study.evaluations
             if not (study.eval_dir(v, s, e) / "eval.json").exists()]
    if evals:
        _run_jobs(evals, jobs, log)
    return [study.run_dir(v, s) for v, s in study.runs()]


@dataclass
class _Job:
    name: str
    cmd: list[str]
    log_path: Path
    on_success: Any  # called when the command exits 0


def _run_jobs(todo: list[_Job], jobs: int, log) -> None:
    """Run the commands `jobs` at a time, each pinned to its share of the cores; raise if any failed."""
    cores = _cores()
    jobs = max(1, min(jobs, len(todo) or 1, len(cores)))
    shares = [cores[i::jobs] for i in range(jobs)]
    running: list[tuple[subprocess.Popen, _Job, list[int], Any]] = []
    failures: list[str] = []
    queue = list(todo)
    while queue or running:
        while queue and len(running) < jobs:
            job = queue.pop(0)
            share = next(s for s in shares if all(s is not r[2] for r in running))
            running.append(_start(job, share, log))
        time.sleep(0.2)
        for item in list(running):
            proc, job, _, logf = item
            if proc.poll() is None:
                continue
            running.remove(item)
            logf.close()
            if proc.returncode == 0:
                job.on_success()
                log(f"done: {job.name}")
            else:
                failures.append(f"{job.name} (exit {proc.returncode}; see {job.log_path})")
    if failures:
        raise RuntimeError("some runs of the study failed: " + "; ".join(failures))


def _run_job(study: Study, variant: Variant, seed: int) -> _Job:
    run_dir = study.run_dir(variant, seed)
    resume = variant.command == "train" and (run_dir / "checkpoints" / "latest").exists()
    cmd = [sys.executable, "-m", "rlvr", variant.command, "--no-progress"]
    if resume:
        cmd += ["--resume", str(run_dir)]
    else:
        cmd += [study.base_of(variant), *study.run_overrides(variant, seed), "--overwrite"]
    name = f"{variant.label} seed {seed}" + (" (resumed)" if resume else "")
    return _Job(name, cmd, run_dir.parent / f"{run_dir.name}.log", lambda: _finish_run(run_dir))


def _finish_run(run_dir: Path) -> None:
    """Gzip the finished run's metrics and mark it done. The plain file goes last, so that a study stopped
    at any point leaves a run that is either rerun (no DONE) or done with its metrics whole."""
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        compress_jsonl(metrics)
    (run_dir / DONE).write_text("ok\n")
    metrics.unlink(missing_ok=True)


def _eval_job(study: Study, variant: Variant, seed: int, evaluation: Evaluation) -> _Job:
    out = study.eval_dir(variant, seed, evaluation)
    cmd = [sys.executable, "-m", "rlvr", "eval", str(study.run_dir(variant, seed)), *evaluation.overrides,
           f"out={out}"]
    return _Job(f"{variant.label} seed {seed}: evaluation {evaluation.label}", cmd,
                study.run_dir(variant, seed) / "eval" / f"{evaluation.label}.log", lambda: None)


def _start(job: _Job, cores: list[int], log):
    job.log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(len(cores)), MKL_NUM_THREADS=str(len(cores)))
    logf = open(job.log_path, "w")  # noqa: SIM115 (closed when the run ends)

    def pin():
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, cores)

    log(f"start: {job.name} on cores {cores}")
    proc = subprocess.Popen(job.cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, preexec_fn=pin)
    return proc, job, cores, logf


def _cores() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _study_record(study: Study) -> dict[str, Any]:
    variants = []
    for v in study.variants:
        record: dict[str, Any] = {"label": v.label, "overrides": v.overrides}
        if v.command != "train":
            record["command"] = v.command
        if v.base:
            record["base"] = v.base
        variants.append(record)
    out = {"name": study.name, "base": study.base, "overrides": study.overrides, "seeds": study.seeds,
           "variants": variants, "metrics": study.metrics}
    if study.evaluations:
        out["evaluate"] = [{"label": e.label, "overrides": e.overrides, "metrics": e.metrics} for e in study.evaluations]
    return out


def study_from_dir(out: str | Path) -> Study:
    """The study recorded in a study directory (for `rlvr compare --report`)."""
    out = Path(out)
    record = out / "study.yaml"
    if not record.exists():
        raise StudyError(f"{record} not found: is {out} a study directory of `rlvr compare`?")
    data = yaml.safe_load(record.read_text())
    # The record may be the study file itself (kept in its own directory), with its optional keys left out.
    return Study(name=str(data.get("name") or out.name), base=str(data.get("base", "default")),
                 seeds=list(data.get("seeds", [0])), overrides=[str(o) for o in data.get("overrides") or []],
                 variants=[Variant(str(v["label"]), [str(o) for o in v.get("overrides") or []], v.get("command", "train"),
                                   _recipe_path(v["base"], record) if v.get("base") else None)
                           for v in data["variants"]],
                 metrics=[str(m) for m in data.get("metrics") or DEFAULT_METRICS], out=out,
                 evaluations=[Evaluation(str(e["label"]), [str(o) for o in e.get("overrides") or []],
                                         [str(m) for m in e.get("metrics") or ["pass@1"]])
                              for e in data.get("evaluate") or []])
