"""MLflow tracking, best effort: the only module of the library that imports mlflow.

A ``Tracker`` logs a run's parameters once and metrics per tick. Tracking never fails the work it
records: any error (mlflow missing, server down, database locked) prints one warning and turns the
tracker off. The tracking store is MLflow's own choice: ``MLFLOW_TRACKING_URI`` when set, else its
default (``sqlite:///mlflow.db`` in the working directory for MLflow >= 3.7).

The MLflow run id is kept in ``<run folder>/mlflow_run.json``, so a resumed training run keeps
logging to the same MLflow run and later stages can append to it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

RUN_FILE = "mlflow_run.json"


def _flatten(values: dict, prefix: str = "") -> dict[str, str]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


class Tracker:
    """Best-effort MLflow run for one run folder; with ``enabled=False`` every method does nothing."""

    def __init__(self, enabled: bool, run_dir, experiment: str, run_name: str, params: dict, tags: dict):
        self._mlflow = None
        if not enabled:
            return
        self._guard("start", self._start, Path(run_dir), experiment, run_name, params, tags)

    def _start(self, run_dir: Path, experiment, run_name, params, tags) -> None:
        import mlflow

        run_file = run_dir / RUN_FILE
        if run_file.is_file():
            run_id = json.loads(run_file.read_text())["run_id"]
            mlflow.start_run(run_id=run_id)
        else:
            mlflow.set_experiment(experiment)
            run = mlflow.start_run(run_name=run_name, tags=tags)
            mlflow.log_params(_flatten(params))
            record = {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id}
            tmp = run_file.with_name(f".{RUN_FILE}.tmp")
            tmp.write_text(json.dumps(record) + "\n")
            os.replace(tmp, run_file)
        self._mlflow = mlflow

    def _guard(self, what: str, function, *args) -> None:
        try:
            function(*args)
        except Exception as err:  # Tracking must never stop the work it records.
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            print(
                f"fdm: warning: MLflow tracking failed ({what}: {reason}); continuing without it",
                file=sys.stderr,
            )
            self._mlflow = None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log numeric metrics at ``step`` (e.g. images seen)."""
        if self._mlflow is not None:
            self._guard("log", self._mlflow.log_metrics, metrics, step)

    def close(self, status: str = "FINISHED") -> None:
        """End the MLflow run with ``status`` (FINISHED, FAILED or KILLED)."""
        if self._mlflow is not None:
            self._guard("close", self._mlflow.end_run, status)
            self._mlflow = None
