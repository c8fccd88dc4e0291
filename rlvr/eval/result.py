"""`EvalResult`: the metrics, samples and settings of one evaluation, as JSON and as a table."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class EvalResult:
    """The outcome of `evaluate`.

    `metrics`: metric name -> value, plus `<name>_ci_low` / `<name>_ci_high` (NaN when undefined).
    `samples`: one dict per generated response, problem-major (sample j of problem i at i*n+j).
    `settings`: what was evaluated and how. `timing`: seconds spent and throughput.
    """

    metrics: dict[str, float]
    samples: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)

    def headline(self) -> list[str]:
        """Metric names without their CI bounds, in display order."""
        return [m for m in self.metrics if not m.endswith(("_ci_low", "_ci_high"))]

    def to_dict(self) -> dict[str, Any]:
        """Metrics, settings and timing (not the samples) as JSON-ready values; NaN becomes None."""
        return {
            "metrics": {k: _json_float(v) for k, v in self.metrics.items()},
            "settings": self.settings,
            "timing": {k: _json_float(v) for k, v in self.timing.items()},
        }

    def to_json(self, indent: int | None = 2) -> str:
        """`to_dict()` as strict JSON text."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def samples_jsonl(self) -> str:
        """The samples, one JSON object per line."""
        return "".join(json.dumps(s, allow_nan=False, default=str) + "\n" for s in self.samples)

    def print_table(self, console=None, title: str | None = None) -> None:
        """Print the metrics as a rich table: value and 95% confidence interval."""
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title or _default_title(self.settings))
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_column("95% CI", justify="right")
        for name in self.headline():
            low = self.metrics.get(f"{name}_ci_low", math.nan)
            high = self.metrics.get(f"{name}_ci_high", math.nan)
            ci = "" if math.isnan(low) or math.isnan(high) else f"[{_fmt(low)}, {_fmt(high)}]"
            table.add_row(name, _fmt(self.metrics[name]), ci)
        (console or Console()).print(table)


def _json_float(v):
    return None if isinstance(v, float) and math.isnan(v) else v


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "n/a"
    return f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"


def _default_title(settings: dict) -> str:
    if not settings:
        return "evaluation"
    return (
        f"{settings.get('task')}: {settings.get('num_problems')} problems, n={settings.get('n')}, "
        f"temperature={settings.get('temperature')}"
    )
