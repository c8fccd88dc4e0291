"""PNG curves of a run directory: reward, accuracy, held-out accuracy, length, entropy, KL."""

from __future__ import annotations

from pathlib import Path

from rlvr.logging.jsonl import jsonl_path, read_jsonl

PANELS = [
    ("reward", ["reward_mean"]),
    ("accuracy", ["accuracy", "sample_accuracy"]),
    ("held-out accuracy", ["eval_accuracy", "eval_accuracy_greedy"]),
    ("loss", ["sft_loss", "eval_loss"]),
    ("response length (tokens)", ["response_len_mean"]),
    ("entropy (nats/token)", ["entropy"]),
    ("KL", ["kl", "kl_seq_k1"]),
    ("reflection rate", ["reflection_rate", "think_rate"]),
    ("think length (tokens)", ["think_len_mean"]),
]
"""(title, metrics drawn in it). Panels whose metrics a run did not log are left out (an SFT run draws its
loss and held-out accuracy; an expert-iteration run its rounds). The training loss of `rlvr train` is not
drawn: a policy-gradient surrogate's value says nothing about progress. "loss" of `rlvr sft` is."""


def _panels(rows: list[dict]) -> list[tuple[str, list[str]]]:
    """The panels with data; with 0/1 rewards (reward == accuracy at every step) one panel for both."""
    sft = any("loss" in r and "reward_mean" not in r and "sft_loss" not in r for r in rows)
    panels = [(t, (["loss", *keys] if t == "loss" and sft else keys)) for t, keys in PANELS]
    both = [r for r in rows if r.get("reward_mean") is not None and r.get("accuracy") is not None]
    if both and all(abs(r["reward_mean"] - r["accuracy"]) < 1e-12 for r in both):
        panels = [("reward = accuracy (0/1 rewards)", ["reward_mean"]) if t == "reward" else (t, keys)
                  for t, keys in panels if t != "accuracy" or any(r.get("sample_accuracy") is not None for r in rows)]
    return [(t, keys) for t, keys in panels if any(r.get(k) is not None for r in rows for k in keys)]


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write RUN_DIR/plots/<panel>.png and an overview.png; returns the paths written."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    metrics_path = jsonl_path(run_dir / "metrics.jsonl")  # a finished study run keeps metrics.jsonl.gz
    if not metrics_path.exists():
        raise FileNotFoundError(f"{metrics_path} not found: is {run_dir} a run directory of rlvr train, sft or "
                                "expert-iter?")
    rows = read_jsonl(metrics_path)
    panels = _panels(rows)
    if not panels:
        raise ValueError(f"{metrics_path} holds no metric to plot")
    x_key = "round" if any("round" in r for r in rows) else "step"
    out_dir = run_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    written = []
    cols = min(4, len(panels))
    fig, axes = plt.subplots(math.ceil(len(panels) / cols), cols, figsize=(5 * cols, 4 * math.ceil(len(panels) / cols)),
                             squeeze=False)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    for ax, (title, keys) in zip(axes.flat, panels):
        single, sax = plt.subplots(figsize=(6, 4))
        for key in keys:
            pts = [(r.get(x_key, r.get("step")), r[key]) for r in rows if r.get(key) is not None]
            if not pts:
                continue
            xs, ys = zip(*pts)
            style = "o-" if len(pts) < 30 else "-"
            for a in (ax, sax):
                a.plot(xs, ys, style, label=key, markersize=3)
        for a in (ax, sax):
            a.set_title(title)
            a.set_xlabel(x_key)
            a.grid(alpha=0.3)
            a.legend(fontsize=8)
        name = title.split(" (")[0].split(" =")[0].replace(" ", "_").replace("-", "_")
        path = out_dir / f"{name}.png"
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
