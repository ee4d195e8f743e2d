"""Which code the report's rows came from, and the check that its inputs are the files their records cite.

Each row of a table comes from metrics.json files, made by an evaluation (its code is in the point's
``timing.json``) of a snapshot, made by a training or an import (its code is in the run's ``trained.json``).
``verify`` refuses, before anything is written, a point whose metrics.json is not the file its evaluation
record (``evaluated.json``) names by SHA-256. ``row_versions`` reads the code of every row, ``footer``
prints the distinct versions under a table, with one warning line when its rows come from different
code, and ``versions.json`` in each dataset's folder is the report's own record (docs/report.md,
"Which code made a table").
"""

from __future__ import annotations

import os
from pathlib import Path

from fdm import paths
from fdm.config import Params
from fdm.digest import file_sha256
from fdm.errors import FdmError
from fdm.report.records import read_json

UNKNOWN = {"commit": "unknown", "dirty": None, "source_sha256": "unknown"}


def _run_dirs(params: Params, runs: str | os.PathLike) -> list[tuple[tuple, str]]:
    """(row key less kimg/point, run folder) of every model and released checkpoint of the profile."""
    found = [
        ((d, v, s), paths.run(d, v, s, root=str(runs))) for d, v, s in params.models()
    ]  # fmt: skip
    found += [
        ((p.dataset, p.formulation, "pretrained"), paths.pretrained(p.dataset, p.formulation, root=str(runs)))
        for p in params.pretrained
    ]
    return found


def verify(params: Params, runs: str | os.PathLike) -> None:
    """Refuse (one line naming the file and both digests) a metrics.json that differs from the SHA-256 its
    evaluation record names."""
    for _, run_dir in _run_dirs(params, runs):
        for kimg in params.snapshot_kimg:
            record = Path(paths.evaluated(run_dir, kimg))
            if not record.is_file():
                continue
            points = read_json(record).get("points", {})
            for point, entry in points.items():
                expected = entry.get("metrics_sha256") if isinstance(entry, dict) else None
                metrics = Path(paths.evaluation(run_dir, kimg)) / point / paths.METRICS_FILE
                if expected is None or not metrics.is_file():
                    continue
                actual = file_sha256(metrics)
                if actual != expected:
                    raise FdmError(
                        f"{metrics} has SHA-256 {actual}, but {record} recorded {expected}: the metrics "
                        "changed after their evaluation (rerun it); no report written"
                    )


def _code(block) -> dict:
    if not isinstance(block, dict):
        return dict(UNKNOWN)
    return {key: block.get(key, UNKNOWN[key]) for key in UNKNOWN}


def row_versions(params: Params, runs: str | os.PathLike) -> dict[tuple, dict]:
    """(dataset, variant or formulation, train seed or "pretrained", kimg, sampler, nfe) -> {"train": code,
    "evaluate": code} of every evaluated point: the evaluation's code from its record (``evaluated.json``),
    or from the point's timing.json while the record is not written; ``UNKNOWN`` where a file has none."""
    versions = {}
    for key, run_dir in _run_dirs(params, runs):
        record = Path(paths.trained(run_dir))
        train = _code(read_json(record).get("code")) if record.is_file() else dict(UNKNOWN)
        for kimg in params.snapshot_kimg:
            evaluated = Path(paths.evaluated(run_dir, kimg))
            listed = read_json(evaluated) if evaluated.is_file() else {}
            for sampler, nfe in params.points(key[0], kimg):
                folder = Path(paths.point(run_dir, kimg, sampler, nfe))
                timing = folder / paths.TIMING_FILE
                if folder.name in listed.get("points", {}):
                    evaluate = _code(listed.get("code"))
                elif (folder / paths.METRICS_FILE).is_file():
                    evaluate = _code(read_json(timing).get("code")) if timing.is_file() else dict(UNKNOWN)
                else:
                    continue
                versions[(*key, kimg, sampler, nfe)] = {"train": train, "evaluate": evaluate}
    return versions


def label(code: dict) -> str:
    """``4f3c2a1b7e90 (+ local changes), source 9ab1c2d3e4f5``, or ``unknown commit, ...``."""
    commit = code["commit"]
    text = f"{commit[:12]}" if commit != "unknown" else "unknown commit"
    if code["dirty"]:
        text += " (+ uncommitted changes)"
    return f"{text}, source {code['source_sha256'][:12]}"


def distinct(versions: list[dict], stage: str) -> list[dict]:
    """The distinct code versions of ``stage`` among ``versions``, by source digest, in order."""
    seen = {}
    for entry in versions:
        seen.setdefault(entry[stage]["source_sha256"], entry[stage])
    return list(seen.values())


def mixed(versions: list[dict]) -> list[str]:
    """The stages whose code differs between ``versions`` (the rows of one table)."""
    return [stage for stage in ("train", "evaluate") if len(distinct(versions, stage)) > 1]


def footer(name: str, versions: list[dict]) -> str:
    """The lines under a table: the code its rows came from, and a warning when they differ."""
    lines = ["", "Code of these rows:"]
    for stage, what in (("train", "training"), ("evaluate", "evaluation")):
        lines.append(f"- {what}: " + "; ".join(label(code) for code in distinct(versions, stage)))
    stages = mixed(versions)
    if stages:
        lines.append(f"- **warning**: {warning(name, stages)}")
    return "\n".join(lines) + "\n"


def warning(name: str, stages: list[str]) -> str:
    """The one-line warning of a table whose rows come from different code."""
    return (
        f"the rows of {name} come from different {' and '.join(stages)} code (rerun the stale jobs, or "
        "compare only rows of one version)"
    )
