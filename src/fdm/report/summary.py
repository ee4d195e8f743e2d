"""The profile's summary for DVC: the few numbers a person compares across experiments, and the curves.

``summary.json`` (DVC's metrics file, ``fdm.paths.SUMMARY``) holds, per dataset:

- ``<metric>.<variant>.<kimg>``: the report metric at the main sampler and NFE, mean over training seeds
  (the rows of ``fid_vs_mimg``);
- ``paired.<variant>.<kimg>``: the mean per-seed difference variant - baseline at the main point (the
  rows of ``paired`` at the main sampler; docs/report.md, "Paired differences");
- ``speedup.<variant>.{training,sampling}``: the robust speedups of ``speedup`` (training at the main
  sampler, sampling with the main sampler at the final snapshot); none where the target is not reached;
- ``confirm.{difference,ci_low,ci_high,worse,pairs}``: the pre-registered statistic (``report.confirm``).

So ``dvc exp show`` has one column per (variant, snapshot) instead of one per evaluation point. The
curves DVC plots are ``plots/fid_vs_mimg/<dataset>.csv`` (series = variant) and
``plots/fid_vs_nfe/<dataset>.csv`` (series = variant and sampler), mean over training seeds, drawn by
the template ``.dvc/plots/series.json`` (colour by series, dash by experiment). Pure functions of the
report's rows; `write_summary` writes them atomically.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from fdm.atomic import atomic_write_text
from fdm.report.tables import to_csv

CONFIRM_FIELDS = ("difference", "ci_low", "ci_high", "worse", "pairs")
MIMG_PLOT_COLUMNS = ("series", "mimg", "kimg", "fid")
NFE_PLOT_COLUMNS = ("series", "nfe", "fid")


def dataset_summary(
    metric: str,
    main: tuple[str, int],
    mimg: Sequence[Mapping],
    pairs: Sequence[Mapping],
    speed: Sequence[Mapping],
    claims: Sequence[Mapping],
) -> dict:
    """The summary of one dataset from its report rows (``fid_vs_mimg_rows``, ``paired_rows``,
    ``speedup_rows``, ``claim_rows``); ``main`` is its (sampler, NFE)."""
    curves: dict[str, dict[str, float]] = {}
    for row in mimg:
        if row["mean"] is not None:
            curves.setdefault(row["variant"], {})[str(row["kimg"])] = row["mean"]
    paired: dict[str, dict[str, float | None]] = {}
    for row in pairs:
        if (row["sampler"], row["nfe"]) == tuple(main):
            paired.setdefault(row["variant"], {})[str(row["kimg"])] = row["difference"]
    speedups: dict[str, dict[str, float | None]] = {}
    for row in speed:
        if row["measure"] == "kimg":
            speedups.setdefault(row["variant"], {})["training"] = row["speedup"]
        elif row["sampler"] == main[0]:
            speedups.setdefault(row["variant"], {})["sampling"] = row["speedup"]
    summary = {metric: curves, "paired": paired, "speedup": speedups}
    confirmatory = [row for row in claims if row["role"] == "confirmatory"]
    if confirmatory:
        summary["confirm"] = {name: confirmatory[0][name] for name in CONFIRM_FIELDS}
    return summary


def mimg_plot_rows(mimg: Sequence[Mapping]) -> list[dict]:
    """The FID-vs-Mimg curve points of one dataset, one series per variant."""
    return [
        {"series": row["variant"], "mimg": row["mimg"], "kimg": row["kimg"], "fid": row["mean"]}
        for row in mimg
        if row["mean"] is not None
    ]


def nfe_plot_rows(nfe: Sequence[Mapping]) -> list[dict]:
    """The FID-vs-NFE curve points of one dataset's final snapshot, one series per (variant, sampler)."""
    return [
        {"series": f"{row['variant']} {row['sampler']}", "nfe": row["nfe"], "fid": row["mean"]}
        for row in nfe
        if row["mean"] is not None
    ]


def write_summary(
    summaries: Mapping[str, dict], curves: Mapping[str, tuple[list, list]], summary: Path, plots: Path
) -> list[Path]:
    """Write ``summary`` (JSON, datasets in profile order) and, per dataset, its two plot CSVs under
    ``plots``; returns the files written."""
    atomic_write_text(summary, json.dumps(dict(summaries), indent=2) + "\n")
    written = [summary]
    for dataset, (mimg, nfe) in curves.items():
        for name, rows, columns in (
            ("fid_vs_mimg", mimg, MIMG_PLOT_COLUMNS),
            ("fid_vs_nfe", nfe, NFE_PLOT_COLUMNS),
        ):
            path = plots / name / f"{dataset}.csv"
            atomic_write_text(path, to_csv(rows, columns))
            written.append(path)
    return written
