"""Bring an MLflow store in line with the pipeline's files (``fdm track``), idempotently.

Every run carries the tag ``fdm.key`` (what it stands for) and, once fully logged, ``fdm.content_sha256``
(a digest of its files). A rerun keeps a run whose digest still matches, re-pointing it at its parent if
the parent run was replaced, and replaces (deletes, then logs anew) any other run of the same key: a run
is replaced exactly when the files behind it changed, and no metric history is ever logged twice. A
model's files include its evaluations' metrics, which its score curves are made of.
"""

from __future__ import annotations

import os
import re

from fdm.tracking.files import Planned, plan
from fdm.tracking.store import (
    CONTENT,
    KEY,
    KIND,
    PARENT,
    experiment_id,
    log,
    open_client,
    reason,
    tracking_uri,
    warn,
)


def _existing_runs(client, experiment: str) -> dict[str, list]:
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


def _create(client, experiment: str, run: Planned, parent_id: str | None) -> str:
    """Log ``run`` completely; the digest tag goes last, so a run cut short is replaced next time."""
    tags = {**run.tags, KEY: run.key, KIND: run.kind}
    if parent_id is not None:
        tags[PARENT] = parent_id
    run_id = client.create_run(experiment, start_time=run.start, run_name=run.name, tags=tags).info.run_id
    log(client, run_id, params=run.params, metrics=run.metrics)
    for path in run.artifacts:
        client.log_artifact(run_id, str(path))
    client.set_tag(run_id, CONTENT, run.digest)
    client.set_terminated(run_id, "FINISHED", end_time=run.end)
    return run_id


def log_planned(client, params, planned: list[Planned]) -> dict:
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
                if old.data.tags.get(CONTENT) == run.digest and old.info.status == "FINISHED"
            ),
            None,
        )
        for old in olds:
            if old is not keep:
                client.delete_run(old.info.run_id)
        if keep is not None:
            ids[run.key] = keep.info.run_id
            counts["unchanged"] += 1
            if keep.data.tags.get(PARENT) != parent_id:  # its model's run was replaced: follow it
                client.set_tag(keep.info.run_id, PARENT, parent_id)
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
        warn(f"{uri}: {reason(err)}")
        return {"logged": False, **base, "reason": reason(err)}
