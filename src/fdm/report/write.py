"""`write_report`: per dataset of the profile, the tables and plots of its records under ``out/<dataset>/``.

It chooses what stands beside our numbers: with ``report.compare_paper`` and the paper's metric, the
paper's values (`fdm.paper_results`, matched by the dataset's ``source``; FID vs Mimg only where our
main sampler and NFE are the paper's). Every file is written atomically.
"""

from __future__ import annotations

import os
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


def write_report(params: Params, runs: str | os.PathLike, out: str | os.PathLike) -> list[Path]:
    """Write every table and plot of every dataset that has records; returns the files written."""
    metric = params.report.metric
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
        if released:
            for name, text in (
                ("pretrained.csv", pretrained_csv(released)),
                ("pretrained.md", pretrained_markdown(released, dataset, metric)),
            ):
                atomic_write_text(folder / name, text)
                written.append(folder / name)
        if any(r.dataset == dataset for r in records):
            written += _trained(params, dataset, records, stats, folder, paper_mimg, paper_nfe)
    if not written:
        raise FdmError(
            f"no metrics.json with {metric} under {runs} for datasets {', '.join(params.datasets)}"
        )
    return written


def _trained(params, dataset, records, stats, folder: Path, paper_mimg, paper_nfe) -> list[Path]:
    """The trained models' tables and plots of ``dataset``: FID vs Mimg, FID vs NFE, speedups, ablations."""
    metric, main, variants = params.report.metric, params.eval.main[dataset], params.variants
    written = []
    mimg = fid_vs_mimg_rows(stats, dataset, variants, main.sampler, main.nfe, paper_mimg)
    nfe = fid_vs_nfe_rows(stats, dataset, variants, params.duration_kimg, paper_nfe)
    baselines = {v: params.baseline(v) for v in variants if params.baseline(v)}
    speed = speedup_rows(
        records, dataset, baselines, (main.sampler, main.nfe), params.duration_kimg, paper_mimg, paper_nfe
    )
    outputs = {
        "fid_vs_mimg.csv": to_csv(mimg, MIMG_COLUMNS),
        "fid_vs_mimg.md": fid_vs_mimg_markdown(mimg, dataset, variants, metric),
        "fid_vs_nfe.csv": to_csv(nfe, NFE_COLUMNS),
        "fid_vs_nfe.md": fid_vs_nfe_markdown(nfe, dataset, variants, metric),
        "speedup.csv": to_csv(speed, SPEEDUP_COLUMNS),
        "speedup.md": speedup_markdown(speed, dataset, metric, bool(paper_mimg or paper_nfe)),
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
        main_point = (main.sampler, main.nfe)
        rows = ablation_rows(
            stats, dataset, axis, values, formulations, baselines, main_point, params.duration_kimg
        )
        for name, text in ((f"ablation_{axis.name}.csv", ablation_csv(rows)),
                           (f"ablation_{axis.name}.md", ablation_markdown(rows, dataset, metric))):  # fmt: skip
            atomic_write_text(folder / name, text)
            written.append(folder / name)
        figures.append((f"ablation_{axis.name}.png", ablation_figure(rows, mimg, dataset, styles, metric)))
    for name, figure in figures:
        write_figure(folder / name, figure)
        written.append(folder / name)
    return written
