"""MLflow tracking, best effort: the only package of the library that imports mlflow.

The files a pipeline writes are the record; MLflow is a view of them (docs/tracking.md). Two ways in:

- ``sync(params, runs, reports)`` (``fdm track``, ``fdm.tracking.sync``) logs what is on disk after the
  fact: an experiment per dataset (``<tracking.experiment_prefix>-<dataset>``), a run per trained model
  (the resolved ``train.json`` as params, ``train.jsonl`` and its scores as metric histories, snapshot
  digests), a nested run per evaluation (its ``metrics.json`` and ``grid.png``), and a ``report`` run per
  dataset holding ``reports/<dataset>/*`` (``fdm.tracking.files``).
- ``Tracker`` logs a training run live, tick by tick, when training runs with ``--tracking``
  (``fdm.tracking.live``). It carries the same ``fdm.key`` but no digest, so a later ``fdm track``
  replaces it with the run logged from the files.

Tracking never fails or changes the work it records: any MLflow error (server down, database locked
past its retries) is one warning on stderr (``fdm.tracking.store``).
"""

from fdm.tracking.live import RUN_FILE, Tracker
from fdm.tracking.store import CONTENT, KEY, PARENT, open_client, tracking_uri
from fdm.tracking.sync import sync

__all__ = ["CONTENT", "KEY", "PARENT", "RUN_FILE", "Tracker", "open_client", "sync", "tracking_uri"]
