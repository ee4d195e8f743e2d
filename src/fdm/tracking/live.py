"""Live logging of a training run (``fdm train --tracking``): params at the start, one point per tick."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from fdm.atomic import atomic_write_text
from fdm.tracking.store import KEY, KIND, experiment_id, flatten, is_number, log, open_client, reason, warn

RUN_FILE = "mlflow_run.json"


class Tracker:
    """Best-effort MLflow run for one training run folder; with ``enabled=False`` every method does nothing.

    The run id is kept in ``<run folder>/mlflow_run.json``, so a resumed training run keeps logging
    to the same MLflow run (or starts a new one if that run was deleted, e.g. replaced by ``fdm track``).
    """

    def __init__(self, enabled: bool, run_dir, experiment: str, run_name: str, params: dict, tags: dict):
        self._client, self._run_id = None, None
        if enabled:
            self._guard("start", self._start, Path(run_dir), experiment, run_name, params, tags)

    def _start(self, run_dir: Path, experiment, run_name, params, tags) -> None:
        client = open_client()
        run_file = run_dir / RUN_FILE
        if run_file.is_file():
            run_id = json.loads(run_file.read_text())["run_id"]
            with contextlib.suppress(Exception):
                if client.get_run(run_id).info.lifecycle_stage == "active":
                    client.update_run(run_id, status="RUNNING")
                    self._client, self._run_id = client, run_id
                    return
        key = "/".join(run_dir.resolve().parts[-3:])  # <dataset>/<variant>/s<seed>, as fdm track names it
        run = client.create_run(
            experiment_id(client, experiment),
            run_name=run_name,
            tags={**{k: str(v) for k, v in tags.items()}, KEY: key, KIND: "model", "fdm.source": "live"},
        )
        log(client, run.info.run_id, params=flatten(params))
        record = {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id}
        atomic_write_text(run_file, json.dumps(record) + "\n")
        self._client, self._run_id = client, run.info.run_id

    def _guard(self, what: str, function, *args) -> None:
        try:
            function(*args)
        except Exception as err:  # Tracking must never stop the work it records.
            warn(f"{what}: {reason(err)}")
            self._client = None

    def log_params(self, params: dict) -> None:
        """Log more params (a snapshot's path and digest, as it is written)."""
        if self._client is not None:
            self._guard("log", log, self._client, self._run_id, params, [])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log the finite numeric ``metrics`` at ``step`` (images seen)."""
        if self._client is not None:
            values = [(k, v, step, None) for k, v in metrics.items() if is_number(v)]
            self._guard("log", log, self._client, self._run_id, None, values)

    def close(self, status: str = "FINISHED") -> None:
        """End the MLflow run with ``status`` (FINISHED, FAILED or KILLED)."""
        if self._client is not None:
            self._guard("close", self._client.set_terminated, self._run_id, status)
            self._client = None
