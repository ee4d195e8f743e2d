"""MLflow tracking, best effort: the only package of the library that imports mlflow.

The files a pipeline writes are the record; MLflow is a view of them (docs/tracking.md). Two ways in:

- ``sync(params, runs, reports)`` (``fdm track``, ``fdm.tracking.sync``) logs what is on disk after the
  fact: an experiment per dataset (``<tracking.experiment_prefix>-<dataset>``), a run per trained model
  and per released checkpoint (the settings its record names as params, ``train.jsonl`` and its scores as
  metric histories, snapshot digests), a nested run per evaluation (its ``metrics.json`` and ``grid.png``),
  and a ``report`` run per dataset holding ``reports/<dataset>/*`` (``fdm.tracking.files``). Every run
  carries MLflow's source tags from the code version its record names.
- ``Tracker`` logs a training run live, tick by tick, when training runs with ``--tracking``
  (``fdm.tracking.live``): the same name and params as ``fdm track`` logs (``model_run_name``,
  ``model_params``) and the same ``fdm.key``, but no digest, so a later ``fdm track`` replaces it with
  the run logged from the files and no model has two runs.

Tracking never fails or changes the work it records: any MLflow error (server down, database locked
past its retries) is one warning on stderr (``fdm.tracking.store``).
"""

from fdm.tracking.files import model_params, model_run_name, source_tags
from fdm.tracking.live import RUN_FILE, Tracker
from fdm.tracking.store import CONTENT, KEY, PARENT, open_client, tracking_uri
from fdm.tracking.sync import sync

__all__ = [
    "CONTENT", "KEY", "PARENT", "RUN_FILE", "Tracker", "model_params", "model_run_name", "open_client",
    "source_tags", "sync", "tracking_uri",
]  # fmt: skip
