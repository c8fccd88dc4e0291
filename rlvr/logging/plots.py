"""PNG curves of a run directory: reward, accuracy, held-out accuracy, length, entropy, KL."""

from __future__ import annotations

from pathlib import Path

from rlvr.logging.jsonl import read_jsonl

PANELS = [
    ("reward", ["reward_mean"]),
    ("accuracy", ["accuracy"]),
    ("held-out accuracy", ["eval_accuracy", "eval_accuracy_greedy"]),
    ("response length (tokens)", ["response_len_mean"]),
    ("entropy (nats/token)", ["entropy"]),
    ("KL", ["kl"]),
    ("reflection rate", ["reflection_rate", "think_rate"]),
    ("think length (tokens)", ["think_len_mean"]),
]


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write RUN_DIR/plots/<panel>.png and an overview.png; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.jsonl"
    if not metrics_path.exists():
        raise FileNotFoundError(f"{metrics_path} not found: is {run_dir} a run directory of `rlvr train`?")
    rows = read_jsonl(metrics_path)
    out_dir = run_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    written = []
    fig, axes = plt.subplots(2, 4, figsize=(20, 8))
    for ax, (title, keys) in zip(axes.flat, PANELS):
        single, sax = plt.subplots(figsize=(6, 4))
        drawn = False
        for key in keys:
            pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            if not pts:
                continue
            drawn = True
            xs, ys = zip(*pts)
            style = "o-" if len(pts) < 30 else "-"
            for a in (ax, sax):
                a.plot(xs, ys, style, label=key, markersize=3)
        for a in (ax, sax):
            a.set_title(title)
            a.set_xlabel("step")
            a.grid(alpha=0.3)
            if drawn:
                a.legend(fontsize=8)
            else:
                a.text(0.5, 0.5, "not logged in this run", ha="center", va="center", transform=a.transAxes)
        path = out_dir / (title.split(" (")[0].replace(" ", "_").replace("-", "_") + ".png")
        single.tight_layout()
        single.savefig(path, dpi=100)
        plt.close(single)
        written.append(path)
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    overview = out_dir / "overview.png"
    fig.savefig(overview, dpi=100)
    plt.close(fig)
    written.append(overview)
    return written
