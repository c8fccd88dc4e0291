"""Experiment trackers: the same metrics, config and plots to TensorBoard, Weights & Biases or MLflow.

`logging.backends: [jsonl, tensorboard, wandb, mlflow]` (jsonl, the run directory's
metrics.jsonl, is always written). Each backend is one small class behind `Tracker`, imported only
when chosen, configured the way its users already configure it:

- tensorboard: event files in RUN_DIR/tensorboard (`tensorboard --logdir runs`); the config as
  text, plots as images. A resumed run drops the events logged after its checkpoint (purge_step).
- wandb: `wandb.init` with WANDB_PROJECT (default: logging.project, else "rlvr"), WANDB_ENTITY,
  WANDB_MODE (`offline` to log without network; `wandb sync` later) and WANDB_DIR (default: the run
  directory); the run id is kept in RUN_DIR/wandb_run_id, so a resumed run continues the same run.
- mlflow: MLFLOW_TRACKING_URI when set (a server, sqlite:///...), else a local file store in
  RUN_DIR/mlruns; MLFLOW_EXPERIMENT_NAME (default: logging.project, else "rlvr"); the config as
  flattened params and config.yaml, plots as artifacts; the run id is kept in RUN_DIR/mlflow_run_id.

A backend whose package is missing is an error at config time naming the `pip install` to run.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

BACKENDS = ("jsonl", "tensorboard", "wandb", "mlflow")
_PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"),
             "mlflow": ("mlflow", "mlflow")}
"""backend -> (module to import, rlvr extra)."""


def backend_problems(backends: list[str]) -> list[str]:
    """Unknown backends and backends whose package is not installed (checked without importing them)."""
    from rlvr.core.registry import unknown_name_message

    problems = []
    for name in backends:
        if name not in BACKENDS:
            problems.append(unknown_name_message("logging backend", name, BACKENDS))
        elif name in _PACKAGES and importlib.util.find_spec(_PACKAGES[name][0]) is None:
            module, extra = _PACKAGES[name]
            pip = "mlflow-skinny" if name == "mlflow" else module
            problems.append(f"logging.backends includes {name!r} but {module} is not installed: "
                            f"pip install {pip} (or pip install 'rlvr[{extra}]')")
    return problems


def _numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if key == "step" or isinstance(value, bool) or value is None:
            continue
        if isinstance(value, (int, float)):
            out[key] = float(value)
    return out


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


class Tracker:
    """One backend. Every method is called on the main rank only."""

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None: ...

    def log_images(self, paths: list[Path], step: int) -> None: ...

    def close(self) -> None: ...


class TensorBoardTracker(Tracker):
    def __init__(self, run_dir: Path, config: dict[str, Any], config_yaml: str, resume_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=resume_step)
        if resume_step is None:
            self.writer.add_text("config", f"```yaml\n{config_yaml}\n```", 0)

    def log_metrics(self, metrics, step):
        for key, value in _numbers(metrics).items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def log_images(self, paths, step):
        import matplotlib.image

        for path in paths:
            image = matplotlib.image.imread(str(path))[..., :3]
            self.writer.add_image(f"plots/{path.stem}", image, step, dataformats="HWC")
        self.writer.flush()

    def close(self):
        self.writer.close()


class WandbTracker(Tracker):
    def __init__(self, run_dir: Path, config: dict[str, Any], project: str | None, name: str):
        import wandb

        id_file = run_dir / "wandb_run_id"
        run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(6)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", project or "rlvr"), name=name, id=run_id,
                              resume="allow", dir=os.environ.get("WANDB_DIR", str(run_dir)), config=config)
        id_file.write_text(run_id + "\n")

    def log_metrics(self, metrics, step):
        self.run.log(_numbers(metrics), step=step)

    def log_images(self, paths, step):
        import wandb

        self.run.log({f"plots/{p.stem}": wandb.Image(str(p)) for p in paths}, step=step)

    def close(self):
        self.run.finish()


class MlflowTracker(Tracker):
    def __init__(self, run_dir: Path, config: dict[str, Any], config_yaml: str, project: str | None, name: str):
        if "MLFLOW_TRACKING_URI" not in os.environ:
            # MLflow 3 keeps the local file store in maintenance mode behind an opt-in; it is what needs no
            # server and no database, so it is the default here (set MLFLOW_TRACKING_URI for anything else).
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (run_dir / "mlruns").resolve().as_uri()
        else:
            uri = os.environ["MLFLOW_TRACKING_URI"]
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        id_file = run_dir / "mlflow_run_id"
        if id_file.exists():
            self.run_id = id_file.read_text().strip()
        else:
            experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", project or "rlvr")
            found = self.client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
            self.run_id = self.client.create_run(experiment_id, run_name=name).info.run_id
            id_file.write_text(self.run_id + "\n")
            params = {k: str(v)[:500] for k, v in _flatten(config).items()}
            from mlflow.entities import Param

            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in params.items()])
            self.client.log_text(self.run_id, config_yaml, "config.yaml")
        self.uri = uri

    def log_metrics(self, metrics, step):
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        # MLflow metric names allow letters, digits, _ - . space / : only
        batch = [Metric(k.replace("@", "_at_"), v, now, step) for k, v in _numbers(metrics).items()]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def log_images(self, paths, step):
        for path in paths:
            self.client.log_artifact(self.run_id, str(path), artifact_path="plots")

    def close(self):
        self.client.set_terminated(self.run_id)


class Trackers:
    """All chosen backends (none but jsonl: nothing to do); each call goes to every one."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        for t in self.trackers:
            t.log_metrics(metrics, step)

    def log_images(self, paths: list[Path], step: int) -> None:
        for t in self.trackers:
            t.log_images(paths, step)

    def close(self) -> None:
        for t in self.trackers:
            t.close()


def make_trackers(backends: list[str], run_dir: Path, config: dict[str, Any], config_yaml: str, *,
                  project: str | None = None, name: str = "run", resume_step: int | None = None) -> Trackers:
    """The trackers of `backends` for the run in `run_dir` (resume_step: the step a resumed run restarts after)."""
    out: list[Tracker] = []
    for backend in dict.fromkeys(backends):
        if backend == "tensorboard":
            out.append(TensorBoardTracker(run_dir, config, config_yaml, resume_step))
        elif backend == "wandb":
            out.append(WandbTracker(run_dir, config, project, name))
        elif backend == "mlflow":
            out.append(MlflowTracker(run_dir, config, config_yaml, project, name))
    return Trackers(out)
