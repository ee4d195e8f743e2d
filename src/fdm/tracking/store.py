"""The MLflow store: its address, a client that retries a shared sqlite file's transient errors, batched logging.

Tracking is best effort (``fdm.tracking``): any MLflow error becomes one warning line, never a failure of
the work it records. The store is ``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///mlflow.db`` in the
working directory (MLflow's own default since 3.7).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

DEFAULT_URI = "sqlite:///mlflow.db"
KEY, KIND, CONTENT = "fdm.key", "fdm.kind", "fdm.content_sha256"
PARENT = "mlflow.parentRunId"
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
"""Shorter than MLflow's (7 retries, 120 s), so an unreachable server costs seconds, not minutes."""
_TRANSIENT = ("database is locked", "already exists", "unique constraint failed")
_MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///mlflow.db`` (relative to the working directory)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def warn(reason: str) -> None:
    """The one line a tracking failure prints."""
    print(f"fdm: warning: MLflow tracking failed ({reason}); continuing without it", file=sys.stderr)


def reason(err: BaseException) -> str:
    """The first line of an error's message, for a one-line warning."""
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


# The store ----------------------------------------------------------------------------------------------------


def _retry(method, *args, attempts: int = 6, **kwargs):
    """Call an MLflow client method, retrying briefly on the transient errors of a shared sqlite file."""
    for attempt in range(attempts):
        try:
            return method(*args, **kwargs)
        except Exception as err:
            if attempt == attempts - 1 or not any(t in str(err).lower() for t in _TRANSIENT):
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


class _Retrying:
    """An ``MlflowClient`` whose every method call goes through ``_retry``."""

    def __init__(self, client):
        self.client = client

    def __getattr__(self, name):
        return functools.partial(_retry, getattr(self.client, name))


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock on a sqlite store's folder while MLflow creates or migrates its tables.

    Two processes opening a fresh ``mlflow.db`` at once both run the schema migration and one fails
    ("table experiments already exists"); the lock (``flock`` on the folder, so no extra file is left
    behind) makes them take turns. Other stores, and systems without ``fcntl``, need no lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover -- Windows
        yield
        return
    if not uri.startswith("sqlite:///"):
        yield
        return
    folder = Path(uri.removeprefix("sqlite:///").split("?", 1)[0]).resolve().parent
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def open_client(uri: str | None = None) -> _Retrying:
    """An MLflow client of ``uri`` (default ``tracking_uri()``), its store created if need be."""
    from mlflow import MlflowClient

    uri = uri or tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        # MLflow caches a store per URI string: pin a relative path to today's working directory.
        uri = f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    if uri.startswith(("http://", "https://")):
        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
    with _store_lock(uri):
        return _Retrying(_retry(MlflowClient, tracking_uri=uri))


EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
"""Opens the experiment in MLflow's "Model training" view (runs, charts) rather than its GenAI view."""


def experiment_id(client: _Retrying, name: str) -> str:
    """The id of experiment ``name``, created if missing (safe when another process creates it too)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, tags=EXPERIMENT_KIND)
    except Exception:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def flatten(values: dict, prefix: str = "") -> dict[str, str]:
    """Nested dict -> {"a.b": "value"} with values as MLflow stores params (text, at most 6000 chars)."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            text = json.dumps(value) if isinstance(value, list | tuple | type(None) | bool) else str(value)
            flat[f"{prefix}{key}"] = text[:_MAX_PARAM_CHARS]
    return flat


def is_number(value) -> bool:
    """A finite int or float (not a bool): what MLflow can store as a metric value."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def log(client: _Retrying, run_id: str, params=None, metrics=(), tags=None) -> None:
    """Params, metrics [(key, value, step, timestamp ms or None)] and tags in batches within MLflow's
    request limits; a metric without a timestamp gets the present time."""
    from mlflow.entities import Metric, Param, RunTag

    params, tags = list((params or {}).items()), list((tags or {}).items())
    for start in range(0, len(params), 100):
        client.log_batch(run_id, params=[Param(k, v) for k, v in params[start : start + 100]])
    now = int(time.time() * 1000)
    metrics = list(metrics)
    for start in range(0, len(metrics), 1000):
        batch = [
            Metric(key, float(value), now if stamp is None else int(stamp), int(step))
            for key, value, step, stamp in metrics[start : start + 1000]
        ]
        client.log_batch(run_id, metrics=batch)
    if tags:
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags])
