"""The report of a study: curves with 95% bands over seeds, final values with intervals, paired differences.

Statistics (seeds are the unit of replication):
- the value of a metric for one run at a step is what its metrics.jsonl (metrics.jsonl.gz once the
  study has finished the run) logged at that step; a run's *final* value is the last logged one;
- mean over seeds with a 95% Student-t interval, mean +- t(0.975, S - 1) * sd / sqrt(S), clipped to
  [0, 1] for rates; no interval with one seed or when all seeds agree exactly (a zero-width interval
  would claim a certainty the seeds cannot give);
- the paired difference of a variant against the first (the baseline) takes, seed by seed, the
  difference of the two runs' final values (same seed: the same prompts and, until the policies
  diverge, the same sampling draws), then the same t-interval over seeds. An interval that excludes
  0 separates the variants at this number of seeds; one that covers 0 does not.

`write_report` writes report.md, report.json (every number in the report) and one PNG per metric;
`report_markdown` and `report_json` are the two texts, so that a kept study can be checked against the
runs it keeps.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rlvr.compare.study import Study
from rlvr.eval.variance import t975
from rlvr.logging.jsonl import jsonl_path, read_jsonl


# Two-sided 95% quantiles of Student's t, t(0.975, df) for df = 1..30.
def mean_interval(values: list[float], bounded: bool = False) -> dict[str, float]:
    """{"mean", "low", "high", "n"}: the mean of `values` with its 95% t-interval.

    NaN bounds for n < 2, and also when every value is the same: a zero-width interval would claim a
    certainty that S seeds cannot give (all of 3 seeds at accuracy 0 says little about a fourth).
    `bounded`: the metric lives in [0, 1] (a rate); the interval is clipped to it.
    """
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(vals)
    if n == 0:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "n": 0}
    mean = math.fsum(vals) / n
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
    if n < 2 or sd == 0.0:
        return {"mean": mean, "low": math.nan, "high": math.nan, "n": n}
    half = t975(n - 1) * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    if bounded:
        low, high = max(0.0, low), min(1.0, high)
    return {"mean": mean, "low": low, "high": high, "n": n}


def is_rate(metric: str) -> bool:
    """Metrics that are fractions in [0, 1]."""
    return metric.startswith(("eval_accuracy", "eval_pass@", "accuracy", "pass@")) or metric.endswith("_frac")


def _series(rows: list[dict], metric: str) -> dict[int, float]:
    return {int(r["step"]): float(r[metric]) for r in rows if r.get(metric) is not None}


def collect(study: Study) -> dict[str, dict[int, list[dict]]]:
    """label -> seed -> metrics rows (runs without a metrics.jsonl or metrics.jsonl.gz are left out)."""
    out: dict[str, dict[int, list[dict]]] = {}
    for variant, seed in study.runs():
        path = jsonl_path(study.run_dir(variant, seed) / "metrics.jsonl")
        if path.exists():
            out.setdefault(variant.label, {})[seed] = read_jsonl(path)
    return out


def collect_evaluations(study: Study) -> dict[str, dict[str, dict[int, float]]]:
    """"<evaluation>:<metric>" -> label -> seed -> the value in that run's eval/<evaluation>/eval.json."""
    out: dict[str, dict[str, dict[int, float]]] = {}
    for evaluation in study.evaluations:
        for metric in evaluation.metrics:
            name = f"{evaluation.label}:{metric}"
            out[name] = {}
            for variant, seed in study.runs():
                path = study.eval_dir(variant, seed, evaluation) / "eval.json"
                if path.exists():
                    value = json.loads(path.read_text())["metrics"].get(metric)
                    if value is not None:
                        out[name].setdefault(variant.label, {})[seed] = float(value)
    return out


def summarize_study(study: Study) -> dict[str, Any]:
    runs = collect(study)
    labels = [v.label for v in study.variants]
    base = labels[0]
    summary: dict[str, Any] = {"study": study.name, "seeds": study.seeds, "variants": labels, "final": {},
                               "paired": {}, "curves": {}}
    evaluated = collect_evaluations(study)
    for metric in study.metrics + list(evaluated):
        finals, curves = {}, {}
        per_seed_final: dict[str, dict[int, float]] = {}
        rate = is_rate(metric.split(":", 1)[-1])
        for label in labels:
            if metric in evaluated:  # a held-out evaluation of the final model: a final value, no curve
                if evaluated[metric].get(label):
                    per_seed_final[label] = evaluated[metric][label]
            else:
                seeds = runs.get(label, {})
                series = {s: _series(rows, metric) for s, rows in seeds.items()}
                series = {s: v for s, v in series.items() if v}
                if not series:
                    continue
                per_seed_final[label] = {s: v[max(v)] for s, v in series.items()}
                steps = sorted({st for v in series.values() for st in v})
                curves[label] = [{"step": st, **mean_interval([v[st] for v in series.values() if st in v], rate)}
                                 for st in steps]
            if label in per_seed_final:
                finals[label] = {**mean_interval(list(per_seed_final[label].values()), bounded=rate),
                                 "per_seed": {str(s): x for s, x in sorted(per_seed_final[label].items())}}
        if not finals:
            continue
        summary["final"][metric] = finals
        if curves:
            summary["curves"][metric] = curves
        if base in per_seed_final:
            paired = {}
            for label in labels[1:]:
                if label not in per_seed_final:
                    continue
                common = sorted(set(per_seed_final[label]) & set(per_seed_final[base]))
                diffs = [per_seed_final[label][s] - per_seed_final[base][s] for s in common]
                paired[label] = {**mean_interval(diffs), "per_seed": {str(s): d for s, d in zip(common, diffs)}}
            summary["paired"][metric] = paired
    return summary


def _fmt(x: float) -> str:
    """3 decimals; 3 significant digits below 0.01, so that a small variance does not print as 0.000. Within
    1e-12 of 0 is the float rounding of an exact 0 (the mean of paired differences that cancel): 0.000."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if abs(x) <= 1e-12:
        return "0.000"
    return f"{x:.3g}" if abs(x) < 0.01 else f"{x:.3f}"


def _interval(d: dict) -> str:
    if math.isnan(d["low"]):
        why = "one seed" if d["n"] < 2 else f"all {d['n']} seeds equal: no interval"
        return f"{_fmt(d['mean'])} ({why})"
    return f"{_fmt(d['mean'])} [{_fmt(d['low'])}, {_fmt(d['high'])}]"


def _bound(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else _fmt(x)


def _relative_variance(r: dict) -> str:
    """The noise-to-signal cell: "unresolved" when the batches do not resolve the mean gradient from the
    noise, [low, inf) when the interval is unbounded above, "(no interval)" when there is none."""
    rel = r["relative_variance"]
    if not isinstance(rel, dict):  # a record without the resolved estimate: recomputed from T, ||gbar|| and R
        signal = r["mean_grad_norm"] ** 2 - r["trace_cov"]["mean"] / r["batches"]
        rel = {"estimate": r["trace_cov"]["mean"] / signal if signal > 0 else None, "low": None, "high": None,
               "unresolved": signal <= 0}
    point = "unresolved" if rel["unresolved"] else _fmt(rel["estimate"])
    if rel["low"] is None:  # fewer than 3 batches, or tr Cov itself not resolved
        return f"{point} (no interval)"
    return f"{point} [{_fmt(rel['low'])}, {'inf)' if rel['high'] is None else _fmt(rel['high']) + ']'}"


def grad_variance_lines(gv: dict) -> list[str]:
    """The report section of one grad_variance*.json (rlvr.compare.grad_variance)."""
    batches = next(iter(gv["estimators"].values()), {}).get("batches")
    lines = ["", f"## Gradient variance: {gv['policy']} (same policy, same prompts, paired rollout batches)", "",
             f"Policy `{gv['policy']}`, {gv['prompts']} prompts, {batches} rollout batches, aggregation "
             f"`{gv['aggregation']}`." + (f" Critic: {gv['critic']}." if gv.get("critic") else ""), "",
             "tr Cov: the total variance of one batch's gradient; ‖E g‖²: the squared norm of the expected "
             "gradient, unbiased (the noise of the mean removed; negative when the noise hides it); their ratio "
             "with Fieller's 95% interval, \"unresolved\" when ‖E g‖² is estimated <= 0; the cosine of each "
             "batch's gradient with the mean of the other batches.", "",
             "| estimator | tr Cov [95%] | ‖E g‖² | tr Cov / ‖E g‖² [95%] | leave-one-out cosine |",
             "| --- | --- | --- | --- | --- |"]
    for name, r in gv["estimators"].items():
        trace = r["trace_cov"]
        trace_cell = _fmt(trace["mean"]) + ("" if _bound(trace["low"]) == "n/a"
                                            else f" [{_fmt(trace['low'])}, {_fmt(trace['high'])}]")
        signal = r.get("signal", r["mean_grad_norm"] ** 2 - trace["mean"] / r["batches"])
        cosine = r.get("cosine_loo", {}).get("mean")
        lines.append(f"| {name} | {trace_cell} | {_fmt(signal)} | {_relative_variance(r)} | {_bound(cosine)} |")
    return lines


def write_report(study: Study) -> Path:
    """report.md, report.json and figures/<metric>.png in the study directory; returns report.md."""
    summary = summarize_study(study)
    figures = _plot(summary, study.out / "figures")
    report = study.out / "report.md"
    report.write_text(report_markdown(study, summary, figures))
    (study.out / "report.json").write_text(report_json(summary))
    return report


def report_json(summary: dict[str, Any]) -> str:
    """report.json: every number of the report (`summarize_study`)."""
    return json.dumps(summary, indent=1, default=lambda x: None) + "\n"


def report_markdown(study: Study, summary: dict[str, Any], figures: dict[str, Path]) -> str:
    """report.md: the tables of `summary`, the study's grad_variance*.json, and links to `figures` (metric ->
    its PNG in the study's figures/)."""
    out = study.out
    labels = summary["variants"]
    lines = [f"# Study: {study.name}", ""]
    lines += [f"Base recipe `{study.base}`" + (f" with `{' '.join(study.overrides)}`" if study.overrides else "")
              + f"; seeds {', '.join(map(str, study.seeds))}; variants:", ""]
    for v in study.variants:
        how = f"`rlvr {v.command}`" + (f" on `{Path(v.base).name}`" if v.base else "") + ", " if v.command != "train" or v.base else ""
        lines.append(f"- **{v.label}**: {how}`{' '.join(v.overrides) or '(the base recipe)'}`")
    if study.evaluations:
        lines += ["", "Held-out evaluations of each run's final model (`rlvr eval RUN_DIR ...`, the `<label>:<metric>` "
                  "columns below):", ""]
        for e in study.evaluations:
            lines.append(f"- **{e.label}**: `{' '.join(e.overrides)}` ({', '.join(e.metrics)})")
    metrics = list(summary["final"])
    if not metrics:
        lines += ["", "No run of this study has logged metrics yet (`rlvr compare STUDY.yaml` runs them)."]
    lines += ["", "## Final values (mean over seeds, 95% t-interval)", ""] if metrics else []
    if metrics:
        lines.append("| variant | " + " | ".join(metrics) + " |")
        lines.append("| --- |" + " --- |" * len(metrics))
        for label in labels:
            cells = [_interval(summary["final"][m][label]) if label in summary["final"][m] else "n/a" for m in metrics]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if len(labels) > 1 and metrics:
        lines += ["", f"## Paired differences against `{labels[0]}` (same seed, final values)", ""]
        lines.append("| variant | " + " | ".join(metrics) + " |")
        lines.append("| --- |" + " --- |" * len(metrics))
        for label in labels[1:]:
            cells = [_interval(summary["paired"].get(m, {})[label]) if label in summary["paired"].get(m, {}) else "n/a"
                     for m in metrics]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines += ["", "An interval that excludes 0 separates the variant from the baseline at this number of "
                  "seeds; one that covers 0 does not (which is not evidence that they are equal)."]
    for gv_path in sorted(out.glob("grad_variance*.json")):
        lines += grad_variance_lines(json.loads(gv_path.read_text()))
    lines += ["", "## Curves (mean over seeds, 95% band)", ""] if figures else []
    for metric, path in figures.items():
        lines.append(f"![{metric}](figures/{path.name})")
    return "\n".join(lines) + "\n"


def _plot(summary: dict, folder: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for metric, curves in summary["curves"].items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, points in curves.items():
            steps = [p["step"] for p in points]
            mean = [p["mean"] for p in points]
            line, = ax.plot(steps, mean, marker=".", label=label)
            low = [p["low"] if not math.isnan(p["low"]) else p["mean"] for p in points]
            high = [p["high"] if not math.isnan(p["high"]) else p["mean"] for p in points]
            ax.fill_between(steps, low, high, alpha=0.2, color=line.get_color())
        ax.set_title(f"{metric} ({summary['study']})")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        path = folder / f"{metric}.png"
        fig.tight_layout()
        _save_palette_png(fig, path)
        plt.close(fig)
        written[metric] = path
    return written


def _save_palette_png(fig, path: Path) -> None:
    """The figure at 100 dpi as a PNG of at most 256 colours: the same size and, to the eye, the same picture
    in about a third of the bytes (a line plot's anti-aliased shades need no more), so that the figures
    kept in docs/studies stay small."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    image = Image.open(buffer).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
