"""MLflow tracking, best effort: the only module of the library that imports mlflow.

The files a pipeline writes are the record; MLflow is a view of them (docs/tracking.md). Two ways in:

- ``sync(...)`` (``fdm track``) logs what is on disk after the fact: an experiment per dataset
  (``<tracking.experiment_prefix>-<dataset>``), a run per trained model (the resolved ``train.json``
  as params, ``train.jsonl`` as metric histories, snapshot paths and SHA-256 digests), a nested run
  per evaluation (its ``metrics.json`` and ``grid.png``), and a ``report`` run per dataset holding
  ``reports/<dataset>/*``. Every run carries the tag ``fdm.key`` (what it stands for) and, once fully
  logged, ``fdm.content_sha256`` (a digest of its files). A rerun keeps a run whose digest and parent
  still match and replaces (deletes, then logs anew) any other run of the same key, so running it
  again logs nothing twice.
- ``Tracker`` logs a training run live, tick by tick, when training runs with ``--tracking``. It
  carries the same ``fdm.key`` but no digest, so a later ``fdm track`` replaces it with the run
  logged from the files.

Tracking never fails or changes the work it records: any MLflow error (server down, database
locked past its retries) is one warning on stderr. The store is ``MLFLOW_TRACKING_URI`` when set,
else ``sqlite:///mlflow.db`` in the working directory (MLflow's own default since 3.7).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from fdm.atomic import atomic_write_text
from fdm.digest import file_sha256
from fdm.errors import FdmError

DEFAULT_URI = "sqlite:///mlflow.db"
RUN_FILE = "mlflow_run.json"
KEY, KIND, CONTENT = "fdm.key", "fdm.kind", "fdm.content_sha256"
PARENT = "mlflow.parentRunId"
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
"""Shorter than MLflow's (7 retries, 120 s), so an unreachable server costs seconds, not minutes."""
_TRANSIENT = ("database is locked", "already exists", "unique constraint failed")
_NOT_METRICS = {"num_samples", "nfe", "num_steps", "kimg", "step"}
_MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///mlflow.db`` (relative to the working directory)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def warn(reason: str) -> None:
    """The one line a tracking failure prints."""
    print(f"fdm: warning: MLflow tracking failed ({reason}); continuing without it", file=sys.stderr)


def _reason(err: BaseException) -> str:
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


def experiment_id(client: _Retrying, name: str) -> str:
    """The id of experiment ``name``, created if missing (safe when another process creates it too)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
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


def _log(client: _Retrying, run_id: str, params=None, metrics=(), tags=None) -> None:
    """Params, metrics [(key, value, step)] and tags in batches within MLflow's request limits."""
    from mlflow.entities import Metric, Param, RunTag

    params, tags = list((params or {}).items()), list((tags or {}).items())
    for start in range(0, len(params), 100):
        client.log_batch(run_id, params=[Param(k, v) for k, v in params[start : start + 100]])
    now = int(time.time() * 1000)
    metrics = list(metrics)
    for start in range(0, len(metrics), 1000):
        batch = [Metric(k, float(v), now, int(step)) for k, v, step in metrics[start : start + 1000]]
        client.log_batch(run_id, metrics=batch)
    if tags:
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags])


# Live logging of a training run -------------------------------------------------------------------------------


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
        _log(client, run.info.run_id, params=flatten(params))
        record = {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id}
        atomic_write_text(run_file, json.dumps(record) + "\n")
        self._client, self._run_id = client, run.info.run_id

    def _guard(self, what: str, function, *args) -> None:
        try:
            function(*args)
        except Exception as err:  # Tracking must never stop the work it records.
            warn(f"{what}: {_reason(err)}")
            self._client = None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log the finite numeric ``metrics`` at ``step`` (images seen)."""
        if self._client is not None:
            values = [(k, v, step) for k, v in metrics.items() if _is_number(v)]
            self._guard("log", _log, self._client, self._run_id, None, values)

    def close(self, status: str = "FINISHED") -> None:
        """End the MLflow run with ``status`` (FINISHED, FAILED or KILLED)."""
        if self._client is not None:
            self._guard("close", self._client.set_terminated, self._run_id, status)
            self._client = None


# What is on disk ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Planned:
    """One MLflow run as the files on disk describe it."""

    key: str  # fdm.key: "<dataset>/<variant>/s<seed>", ".../eval/<kimg>/<sampler>-<nfe>", "<dataset>/report"
    kind: str  # model | evaluation | report
    dataset: str
    name: str
    tags: dict
    params: dict
    metrics: list  # (name, value, step)
    artifacts: list  # (local path, artifact folder or None)
    digest: str  # SHA-256 over the files behind the run
    parent: str | None = None  # key of the parent run


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _digest(files: dict[str, str]) -> str:
    """SHA-256 over (name, file SHA-256) pairs: changes when any file changes, appears or disappears."""
    return hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise FdmError(f"{path}: not readable JSON ({_reason(err)})") from None


_MODEL_DIR = re.compile(r"s(?P<seed>\d+)")
_EVAL_DIR = re.compile(r"(?P<sampler>[a-z0-9_]+)-(?P<nfe>\d+)")


def _model(run_dir: Path, dataset: str, variant: str, seed: int, common_tags: dict) -> Planned:
    files, params, metrics = {}, {}, []
    config = run_dir / "train.json"
    if config.is_file():
        files["train.json"] = file_sha256(config)
        params.update(flatten(_read_json(config)))
    log = run_dir / "train.jsonl"
    if log.is_file():
        files["train.jsonl"] = file_sha256(log)
        for number, line in enumerate(log.read_text(encoding="utf-8").splitlines(), 1):
            try:
                record = json.loads(line)
                images = round(record["kimg"] * 1000)
            except (ValueError, KeyError, TypeError) as err:
                raise FdmError(f"{log}: line {number} is not a tick record ({_reason(err)})") from None
            metrics += [(k, v, images) for k, v in record.items() if k != "kimg" and _is_number(v)]
    for snapshot in sorted((run_dir / "snapshots").glob("*.safetensors")):
        sha = file_sha256(snapshot)
        files[f"snapshots/{snapshot.name}"] = sha
        params[f"snapshots.{snapshot.stem}.path"] = str(snapshot)
        params[f"snapshots.{snapshot.stem}.sha256"] = sha
    tags = {**common_tags, "dataset": dataset, "variant": variant, "train_seed": str(seed), "stage": "train"}
    return Planned(
        key=f"{dataset}/{variant}/s{seed}", kind="model", dataset=dataset, name=f"{variant}-s{seed}",
        tags=tags, params=params, metrics=metrics, artifacts=[], digest=_digest(files),
    )  # fmt: skip


def _evaluation(path: Path, model: Planned, kimg: int, sampler: str, nfe: int) -> Planned:
    record = _read_json(path)
    metrics = [(k, v, kimg * 1000) for k, v in record.items() if k not in _NOT_METRICS and _is_number(v)]
    provenance = {k: v for k, v in record.items() if k in _NOT_METRICS or not _is_number(v)}
    params = {**flatten(provenance), "kimg": str(kimg), "sampler": sampler, "nfe": str(nfe)}
    files = {"metrics.json": file_sha256(path)}
    artifacts = [(path, None)]
    grid = path.with_name("grid.png")
    if grid.is_file():
        files["grid.png"] = file_sha256(grid)
        artifacts.append((grid, None))
    tags = {
        **{k: model.tags[k] for k in ("profile", "params_file", "dataset", "variant", "train_seed")},
        "stage": "evaluate", "kimg": str(kimg), "sampler": sampler, "nfe": str(nfe),
    }  # fmt: skip
    return Planned(
        key=f"{model.key}/eval/{kimg}/{sampler}-{nfe}", kind="evaluation", dataset=model.dataset,
        name=f"{model.name} {kimg}kimg {sampler}-{nfe}", tags=tags, params=params, metrics=metrics,
        artifacts=artifacts, digest=_digest(files), parent=model.key,
    )  # fmt: skip


def _report(dataset: str, files: list[Path], common_tags: dict) -> Planned:
    return Planned(
        key=f"{dataset}/report", kind="report", dataset=dataset, name="report",
        tags={**common_tags, "dataset": dataset, "stage": "report"}, params={}, metrics=[],
        artifacts=[(p, None) for p in files], digest=_digest({p.name: file_sha256(p) for p in files}),
    )  # fmt: skip


def plan(params, runs: str | os.PathLike, reports: str | os.PathLike) -> list[Planned]:
    """Every run the files under ``runs`` and ``reports`` describe, parents before their children.

    A model is any ``runs/<dataset>/<variant>/s<seed>/`` holding ``train.json`` or ``train.jsonl``;
    its evaluations are its ``eval/<kimg>/<sampler>-<nfe>/metrics.json``; a dataset's report is
    every file in ``reports/<dataset>/``.
    """
    runs, reports = Path(runs), Path(reports)
    common = {"profile": params.tracking.experiment_prefix, "params_file": str(params.path)}
    planned = []
    for run_dir in sorted(p for p in runs.glob("*/*/s*") if p.is_dir()):
        match = _MODEL_DIR.fullmatch(run_dir.name)
        if match is None or not any((run_dir / f).is_file() for f in ("train.json", "train.jsonl")):
            continue
        dataset, variant = run_dir.parent.parent.name, run_dir.parent.name
        model = _model(run_dir, dataset, variant, int(match["seed"]), common)
        planned.append(model)
        for path in sorted(run_dir.glob("eval/*/*/metrics.json")):
            point = _EVAL_DIR.fullmatch(path.parent.name)
            if point is None or not path.parent.parent.name.isdigit():
                continue
            kimg = int(path.parent.parent.name)
            planned.append(_evaluation(path, model, kimg, point["sampler"], int(point["nfe"])))
    for folder in sorted(p for p in reports.glob("*") if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        if files:
            planned.append(_report(folder.name, files, common))
    return planned


# Logging it ---------------------------------------------------------------------------------------------------


def _existing_runs(client: _Retrying, experiment: str) -> dict[str, list]:
    """Active runs of ``experiment`` that carry ``fdm.key``, by key."""
    by_key, token = {}, None
    while True:
        page = client.search_runs([experiment], max_results=1000, page_token=token)
        for run in page:
            if KEY in run.data.tags:
                by_key.setdefault(run.data.tags[KEY], []).append(run)
        token = page.token
        if not token:
            return by_key


def _create(client: _Retrying, experiment: str, run: Planned, parent_id: str | None) -> str:
    """Log ``run`` completely; the digest tag goes last, so a run cut short is replaced next time."""
    tags = {**run.tags, KEY: run.key, KIND: run.kind}
    if parent_id is not None:
        tags[PARENT] = parent_id
    run_id = client.create_run(experiment, run_name=run.name, tags=tags).info.run_id
    _log(client, run_id, params=run.params, metrics=run.metrics)
    for path, folder in run.artifacts:
        client.log_artifact(run_id, str(path), folder)
    client.set_tag(run_id, CONTENT, run.digest)
    client.set_terminated(run_id, "FINISHED")
    return run_id


def log_planned(client: _Retrying, params, planned: list[Planned]) -> dict:
    """Bring the store in line with ``planned``; returns the marker record (run ids and counts)."""
    counts = {"logged": 0, "unchanged": 0, "replaced": 0}
    ids: dict[str, str] = {}
    experiments: dict[str, str] = {}
    existing: dict[str, dict] = {}
    for run in planned:
        if run.dataset not in experiments:
            experiments[run.dataset] = experiment_id(client, params.tracking.experiment(run.dataset))
            existing[run.dataset] = _existing_runs(client, experiments[run.dataset])
        olds = existing[run.dataset].get(run.key, [])
        parent_id = ids[run.parent] if run.parent else None
        keep = next(
            (
                old
                for old in olds
                if old.data.tags.get(CONTENT) == run.digest
                and old.info.status == "FINISHED"
                and old.data.tags.get(PARENT) == parent_id
            ),
            None,
        )
        for old in olds:
            if old is not keep:
                client.delete_run(old.info.run_id)
        if keep is not None:
            ids[run.key] = keep.info.run_id
            counts["unchanged"] += 1
        else:
            ids[run.key] = _create(client, experiments[run.dataset], run, parent_id)
            counts["replaced" if olds else "logged"] += 1
    models = {run.key: {"run_id": ids[run.key], "evaluations": {}} for run in planned if run.kind == "model"}
    for run in planned:
        if run.kind == "evaluation":
            models[run.parent]["evaluations"][run.key.removeprefix(run.parent + "/eval/")] = ids[run.key]
    return {
        "logged": True,
        "experiments": {d: {"name": params.tracking.experiment(d), "id": i} for d, i in experiments.items()},
        "models": models,
        "reports": {run.dataset: ids[run.key] for run in planned if run.kind == "report"},
        "runs": counts,
    }


def sync(params, runs: str | os.PathLike, reports: str | os.PathLike) -> dict:
    """Log the files under ``runs`` and ``reports`` to MLflow, idempotently; never raises for MLflow errors.

    Returns the marker record: ``logged`` (bool), the tracking URI, and on success the experiment and
    run ids plus how many runs were logged, left unchanged or replaced; on failure the reason.
    Malformed input files are an ``FdmError`` (raised before MLflow is contacted).
    """
    uri = tracking_uri()
    base = {"tracking_uri": re.sub(r"//[^/@]*@", "//", uri)}  # no credentials in the marker
    if not params.tracking.enabled:
        return {"logged": False, **base, "reason": f"tracking.enabled is false in {params.path}"}
    planned = plan(params, runs, reports)
    try:
        return {**log_planned(open_client(uri), params, planned), **base}
    except Exception as err:  # an outage must not fail the pipeline: the files stay the record
        warn(f"{uri}: {_reason(err)}")
        return {"logged": False, **base, "reason": _reason(err)}
