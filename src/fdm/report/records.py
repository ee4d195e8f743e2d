"""The report's input: the profile's metrics.json files as `Record`s, and their mean over training seeds.

Reading: one `Record` per evaluation of the profile (its models, snapshots and sampler/NFE points, at
their `fdm.paths` places) whose metrics.json exists. Aggregation (docs/report.md, "Curves: mean and
95% interval over training seeds"): per point, the mean over training seeds, the sample standard
deviation and the 95% Student-t confidence interval of the mean (none for one seed).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from fdm import paths
from fdm.config import Params
from fdm.errors import FdmError
from fdm.report.speedup import CONFIDENCE


@dataclasses.dataclass(frozen=True)
class Record:
    """One evaluation: a model (dataset, variant, training seed) at a snapshot, sampler and NFE."""

    dataset: str
    variant: str
    train_seed: int
    kimg: int
    sampler: str
    nfe: int
    value: float  # the report metric


POINT = ("dataset", "variant", "kimg", "sampler", "nfe")  # a point of the curves: a Record less its seed


@dataclasses.dataclass(frozen=True)
class Stat:
    """Mean over training seeds, sample standard deviation and 95% Student-t interval (None for one seed)."""

    mean: float
    std: float | None
    n: int
    ci_low: float | None = None
    ci_high: float | None = None


def read_records(params: Params, runs: str | os.PathLike, metric: str) -> list[Record]:
    """The ``metric`` of every evaluation of the profile under ``runs`` (`point_values`).

    Only the profile's points are read (its models, snapshots and sampler/NFE points), so files left by
    an earlier version of the profile do not enter the report; a malformed file is an FdmError.
    """
    records = []
    for dataset, variant, train_seed in params.models():
        run_dir = paths.run(dataset, variant, train_seed, root=str(runs))
        for kimg in params.snapshot_kimg:
            values = point_values(run_dir, kimg, params.points(dataset, kimg), metric)
            for (sampler, nfe), value in values.items():
                records.append(Record(dataset, variant, train_seed, kimg, sampler, nfe, value))
    return records


def point_values(run_dir: str, kimg: int, points, metric: str) -> dict[tuple[str, int], float]:
    """(sampler, nfe) -> ``metric`` of each of ``points`` evaluated at ``run_dir``'s snapshot ``kimg``.

    From the evaluation record (``evaluated.json``, which lists every point's metrics and is what a DVC
    remote brings to a new clone), or, for a point it does not list (an evaluation still running or
    killed), from the point's metrics.json.
    """
    record = Path(paths.evaluated(run_dir, kimg))
    listed = read_json(record).get("points", {}) if record.is_file() else {}
    values = {}
    for sampler, nfe in points:
        entry = listed.get(paths.POINT.format(sampler=sampler, nfe=nfe))
        if isinstance(entry, dict) and metric in entry:
            values[(sampler, nfe)] = finite(entry[metric], record, metric)
            continue
        path = Path(paths.metrics(run_dir, kimg, sampler, nfe))
        if path.is_file():
            values[(sampler, nfe)] = read_metric(path, metric)
    return values


def read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise FdmError(f"{path}: not readable JSON ({err})") from None


def read_metric(path: Path, metric: str) -> float:
    metrics = read_json(path)
    if not isinstance(metrics, dict) or metric not in metrics:
        found = ", ".join(sorted(metrics)) if isinstance(metrics, dict) else type(metrics).__name__
        raise FdmError(f"{path}: no {metric!r} (found: {found})")
    return finite(metrics[metric], path, metric)


def finite(value, path: Path, metric: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FdmError(f"{path}: {metric} is {value!r}, not a finite number")
    return float(value)


def frame(records: Iterable[Record]) -> pd.DataFrame:
    """The records as a table: one row each, one column per field of `Record`."""
    fields = [field.name for field in dataclasses.fields(Record)]
    return pd.DataFrame([dataclasses.astuple(r) for r in records], columns=fields)


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Stat:
    """Mean ± t_{(1+confidence)/2, n-1} · s / sqrt(n) of independent values (the training seeds)."""
    n = len(values)
    mean = float(np.mean(values))
    if n < 2:
        return Stat(mean, None, n)
    std = float(np.std(values, ddof=1))
    half = float(scipy_stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return Stat(mean, std, n, mean - half, mean + half)


def aggregate(records: Iterable[Record]) -> dict[tuple, Stat]:
    """(dataset, variant, kimg, sampler, nfe) -> Stat over training seeds, in seed order."""
    table = frame(records).sort_values("train_seed", kind="stable")
    return {point: t_interval(values.tolist()) for point, values in table.groupby(list(POINT))["value"]}


def by_seed(records: Iterable[Record]) -> dict[tuple, dict[int, float]]:
    """(dataset, variant, kimg, sampler, nfe) -> {training seed: value}: what paired differences read."""
    values: dict[tuple, dict[int, float]] = {}
    for r in sorted(records, key=lambda r: r.train_seed):
        values.setdefault((r.dataset, r.variant, r.kimg, r.sampler, r.nfe), {})[r.train_seed] = r.value
    return values


PER_SEED_COLUMNS = ("variant", "train_seed", "kimg", "sampler", "nfe", "metric", "value")


def per_seed_rows(
    records: Iterable[Record], dataset: str, variants: Sequence[str], metric: str
) -> list[dict]:
    """Every value the report used, one row per evaluation (``per_seed.csv``), in profile order: any later
    analysis (paired or not) can start from these instead of the means."""
    order = {v: i for i, v in enumerate(variants)}
    mine = [r for r in records if r.dataset == dataset]
    mine.sort(
        key=lambda r: (order.get(r.variant, len(order)), r.variant, r.train_seed, r.kimg, r.sampler, r.nfe)
    )
    return [
        {"variant": r.variant, "train_seed": r.train_seed, "kimg": r.kimg, "sampler": r.sampler, "nfe": r.nfe,
         "metric": metric, "value": r.value}
        for r in mine
    ]  # fmt: skip
