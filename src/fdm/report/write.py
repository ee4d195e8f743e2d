"""`write_report`: per dataset of the profile, the tables and plots of its records under ``out/<dataset>/``.

It chooses what stands beside our numbers: with ``report.compare_paper`` and the paper's metric, the
paper's values (`fdm.paper_results`, matched by the dataset's ``source``; FID vs Mimg only where our
main sampler and NFE are the paper's). Under each table it prints the code its rows came from, and warns
when they differ (`fdm.report.versions`); ``versions.json`` records the report's own code. Nothing is
written when a metrics file differs from its evaluation record. Every file is written atomically.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from fdm import paper_results
from fdm.atomic import atomic_write_text
from fdm.config import Params
from fdm.errors import FdmError
from fdm.report.ablation import ablation_csv, ablation_figure, ablation_markdown, ablation_rows
from fdm.report.figures import (
    fid_vs_mimg_figure,
    fid_vs_nfe_figure,
    line_styles,
    speedup_figure,
    write_figure,
)
from fdm.report.pretrained import pretrained_csv, pretrained_markdown, pretrained_rows
from fdm.report.records import aggregate, read_records
from fdm.report.tables import (
    MIMG_COLUMNS,
    NFE_COLUMNS,
    SPEEDUP_COLUMNS,
    fid_vs_mimg_markdown,
    fid_vs_mimg_rows,
    fid_vs_nfe_markdown,
    fid_vs_nfe_rows,
    speedup_markdown,
    speedup_rows,
    to_csv,
)
from fdm.report.versions import footer, mixed, row_versions, verify, warning


def write_report(params: Params, runs: str | os.PathLike, out: str | os.PathLike) -> list[Path]:
    """Write every table and plot of every dataset that has records; returns the files written."""
    from fdm.provenance import code_version

    metric = params.report.metric
    verify(params, runs)
    versions = row_versions(params, runs)
    records = read_records(params, runs, metric)
    stats = aggregate(records) if records else {}
    written = []
    for dataset, spec in params.datasets.items():
        folder = Path(out) / dataset
        main = params.eval.main[dataset]
        compare = params.report.compare_paper and metric == paper_results.METRIC
        same_main = (main.sampler, main.nfe) == (
            paper_results.MAIN_SAMPLER,
            paper_results.MAIN_NFE.get(spec.source),
        )
        paper_mimg = paper_results.fid_vs_kimg(spec.source) if compare and same_main else {}
        paper_nfe = paper_results.fid_vs_nfe(spec.source) if compare else {}
        released = pretrained_rows(params, runs, dataset, metric, paper_mimg, paper_nfe)
        mine = {key: v for key, v in versions.items() if key[0] == dataset}
        if released:
            rows = [v for key, v in mine.items() if key[2] == "pretrained"]
            for name, text in (
                ("pretrained.csv", pretrained_csv(released)),
                (
                    "pretrained.md",
                    pretrained_markdown(released, dataset, metric) + _footer(folder, "pretrained.md", rows),
                ),
            ):
                atomic_write_text(folder / name, text)
                written.append(folder / name)
        if any(r.dataset == dataset for r in records):
            written += _trained(params, dataset, records, stats, folder, paper_mimg, paper_nfe, mine)
        if mine:
            record = {"report": code_version("report"), "rows": _distinct_rows(mine)}
            atomic_write_text(folder / "versions.json", json.dumps(record, indent=2, sort_keys=True) + "\n")
            written.append(folder / "versions.json")
    if not written:
        raise FdmError(
            f"no metrics.json with {metric} under {runs} for datasets {', '.join(params.datasets)}"
        )
    return written


def _footer(folder: Path, name: str, rows: list[dict]) -> str:
    """The code lines under table ``name``; a table whose rows come from different code also warns on stderr."""
    stages = mixed(rows)
    if stages:
        print(f"fdm: warning: {warning(str(folder / name), stages)}", file=sys.stderr)
    return footer(name, rows)


def _distinct_rows(versions: dict) -> list[dict]:
    """Every distinct (training code, evaluation code) of the rows, with how many rows each made."""
    counts: dict[str, dict] = {}
    for entry in versions.values():
        key = json.dumps(entry, sort_keys=True)
        counts.setdefault(key, {**entry, "rows": 0})["rows"] += 1
    return list(counts.values())


def _trained(params, dataset, records, stats, folder: Path, paper_mimg, paper_nfe, versions) -> list[Path]:
    """The trained models' tables and plots of ``dataset``: FID vs Mimg, FID vs NFE, speedups, ablations."""
    metric, main, variants = params.report.metric, params.eval.main[dataset], params.variants
    trained = {key: v for key, v in versions.items() if key[1] in variants and key[2] != "pretrained"}

    def rows(*, point=None, kimg=None, among=variants) -> list[dict]:
        return [
            v for (_, variant, _, k, sampler, nfe), v in trained.items()
            if variant in among and (point is None or (sampler, nfe) == point) and (kimg is None or k == kimg)
        ]  # fmt: skip

    written = []
    mimg = fid_vs_mimg_rows(stats, dataset, variants, main.sampler, main.nfe, paper_mimg)
    nfe = fid_vs_nfe_rows(stats, dataset, variants, params.duration_kimg, paper_nfe)
    baselines = {v: params.baseline(v) for v in variants if params.baseline(v)}
    speed = speedup_rows(
        records, dataset, baselines, (main.sampler, main.nfe), params.duration_kimg, paper_mimg, paper_nfe
    )
    main_point = (main.sampler, main.nfe)
    outputs = {
        "fid_vs_mimg.csv": to_csv(mimg, MIMG_COLUMNS),
        "fid_vs_mimg.md": fid_vs_mimg_markdown(mimg, dataset, variants, metric)
        + _footer(folder, "fid_vs_mimg.md", rows(point=main_point)),
        "fid_vs_nfe.csv": to_csv(nfe, NFE_COLUMNS),
        "fid_vs_nfe.md": fid_vs_nfe_markdown(nfe, dataset, variants, metric)
        + _footer(folder, "fid_vs_nfe.md", rows(kimg=params.duration_kimg)),
        "speedup.csv": to_csv(speed, SPEEDUP_COLUMNS),
        "speedup.md": speedup_markdown(speed, dataset, metric, bool(paper_mimg or paper_nfe))
        + _footer(folder, "speedup.md", rows()),
    }
    for name, text in outputs.items():
        atomic_write_text(folder / name, text)
        written.append(folder / name)
    styles = line_styles({v: params.formulation(v) for v in variants})
    figures = [
        ("fid_vs_mimg.png", fid_vs_mimg_figure(mimg, dataset, styles, metric)),
        ("fid_vs_nfe.png", fid_vs_nfe_figure(nfe, dataset, styles, metric)),
        ("speedup.png", speedup_figure(speed, dataset, styles, metric)),
    ]
    for axis in params.report.ablations:
        values = {v: params.setting(dataset, v, axis.setting) for v in axis.variants}
        formulations = {v: params.formulation(v) for v in variants}
        table = ablation_rows(
            stats, dataset, axis, values, formulations, baselines, main_point, params.duration_kimg
        )
        compared = set(axis.variants) | {baselines[v] for v in axis.variants if v in baselines}
        md = ablation_markdown(table, dataset, metric) + _footer(
            folder, f"ablation_{axis.name}.md", rows(point=main_point, among=compared)
        )
        for name, text in ((f"ablation_{axis.name}.csv", ablation_csv(table)),
                           (f"ablation_{axis.name}.md", md)):  # fmt: skip
            atomic_write_text(folder / name, text)
            written.append(folder / name)
        figures.append((f"ablation_{axis.name}.png", ablation_figure(table, mimg, dataset, styles, metric)))
    for name, figure in figures:
        write_figure(folder / name, figure)
        written.append(folder / name)
    return written
