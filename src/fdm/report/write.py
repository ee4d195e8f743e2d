"""`write_report`: per dataset of the profile, the tables and plots of its records under ``out/<dataset>/``.

It chooses what stands beside our numbers: with ``report.compare_paper`` and the paper's metric, the
paper's values (`fdm.paper_results`, matched by the dataset's ``source``; FID vs Mimg only where our
main sampler and NFE are the paper's); in every table's caption and every figure, the metric's floor
(`fdm.metrics.floor`, from the profile's reference statistics at ``fdm.paths.stats_file``); in every
comparison's caption, what the profile pre-registers (``report.confirm``), so that the rest is
exploratory. Under each table it prints the code its rows came from, and warns when they differ
(`fdm.report.versions`); ``versions.json`` records the report's own code. Nothing is written when a
metrics file differs from its evaluation record. Every file is written atomically.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from fdm import names, paper_results, paths
from fdm.atomic import atomic_write_text
from fdm.config import Params
from fdm.errors import FdmError
from fdm.report.ablation import ablation_csv, ablation_figure, ablation_markdown, ablation_rows
from fdm.report.claims import CLAIM_COLUMNS, claim_rows, claims_markdown, confirm_line, exploratory_note
from fdm.report.figures import (
    fid_vs_mimg_figure,
    fid_vs_nfe_figure,
    line_styles,
    speedup_figure,
    write_figure,
)
from fdm.report.paired import PAIRED_COLUMNS, paired_markdown, paired_rows
from fdm.report.pretrained import pretrained_csv, pretrained_markdown, pretrained_rows
from fdm.report.records import PER_SEED_COLUMNS, aggregate, by_seed, per_seed_rows, read_records
from fdm.report.summary import dataset_summary, mimg_plot_rows, nfe_plot_rows, write_summary
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

FLOOR_COLUMNS = ("metric", "n", "reference", "draws", "how", "mean", "std")


def write_report(
    params: Params,
    runs: str | os.PathLike,
    out: str | os.PathLike,
    echo: Callable[[str], None] | None = None,
    summary: str | os.PathLike | None = None,
    plots: str | os.PathLike | None = None,
) -> list[Path]:
    """Write every table and plot of every dataset that has records; returns the files written.

    ``echo`` is given the pre-registered statistic (``report.confirm``) of each dataset first. With
    ``summary`` and ``plots``, also the profile's summary for DVC there (`fdm.report.summary`).
    """
    from fdm.provenance import code_version

    metric = params.report.metric
    verify(params, runs)
    versions = row_versions(params, runs)
    records = read_records(params, runs, metric)
    stats = aggregate(records) if records else {}
    written, summaries, curves = [], {}, {}
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
        trained = any(r.dataset == dataset for r in records)
        if not (released or trained):
            continue
        floors = dataset_floors(params, dataset)
        floor = floors[metric]
        floor_note = f"Floor: {floor.describe(metric)}."
        mine = {key: v for key, v in versions.items() if key[0] == dataset}
        outputs = {
            "floor.csv": to_csv([{"metric": m, **_floor_fields(f)} for m, f in floors.items()], FLOOR_COLUMNS)
        }
        if released:
            rows = [v for key, v in mine.items() if key[2] == "pretrained"]
            outputs["pretrained.csv"] = pretrained_csv(released)
            outputs["pretrained.md"] = pretrained_markdown(released, dataset, metric, [floor_note]) + _footer(
                folder, "pretrained.md", rows
            )
        for name, text in outputs.items():
            atomic_write_text(folder / name, text)
            written.append(folder / name)
        if trained:
            figure_floor = (floor.mean, f"floor: {floor.n:,} real images")
            files, summaries[dataset], curves[dataset] = _trained(
                params,
                dataset,
                records,
                stats,
                folder,
                paper_mimg,
                paper_nfe,
                (floor_note, figure_floor),
                echo,
                mine,
            )
            written += files
        record = {"report": code_version("report"), "rows": _distinct_rows(mine)}
        atomic_write_text(folder / "versions.json", json.dumps(record, indent=2, sort_keys=True) + "\n")
        written.append(folder / "versions.json")
    if not written:
        raise FdmError(
            f"no metrics.json with {metric} under {runs} for datasets {', '.join(params.datasets)}"
        )
    if summary is not None and plots is not None:
        written += write_summary(summaries, curves, Path(summary), Path(plots))
    return written


def dataset_floors(params: Params, dataset: str) -> dict:
    """metric name -> `fdm.metrics.floor.Floor`: the report metric's kind (FID or KID) of
    ``eval.num_samples`` real images in each feature space of the profile, from its reference statistics."""
    from fdm.metrics.floor import real_floor  # clean-fid's distances, as every evaluation scores
    from fdm.metrics.stats import load_stats

    kind = params.report.metric.split("_", 1)[0]
    return {
        names.metric_name(kind, extractor, mode): real_floor(
            load_stats(paths.stats_file(params.name, dataset, extractor, mode)), params.eval.num_samples, kind
        )
        for extractor, mode in params.eval.spaces()
    }


def _floor_fields(floor) -> dict:
    return {name: getattr(floor, name) for name in FLOOR_COLUMNS[1:]}


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


def _trained(
    params, dataset, records, stats, folder: Path, paper_mimg, paper_nfe, floor, echo, versions
) -> tuple[list[Path], dict, tuple[list, list]]:
    """The trained models' tables and plots of ``dataset``: FID vs Mimg, FID vs NFE, the paired
    comparisons, the claims, speedups, ablations, and every value they use (``per_seed.csv``); returns
    the files written, the dataset's summary and its plot rows (`fdm.report.summary`)."""
    metric, main, variants = params.report.metric, params.eval.main[dataset], params.variants
    floor_note, figure_floor = floor
    trained = {key: v for key, v in versions.items() if key[1] in variants and key[2] != "pretrained"}

    def code_of(name, *, point=None, kimg=None, among=variants) -> str:
        """The footer of table ``name``: the code of its rows (those at ``point``, ``kimg``, of ``among``)."""
        rows = [
            v for (_, variant, _, k, sampler, nfe), v in trained.items()
            if variant in among and (point is None or (sampler, nfe) == point) and (kimg is None or k == kimg)
        ]  # fmt: skip
        return _footer(folder, name, rows)

    explore = exploratory_note(params.report.confirm)
    values = by_seed(records)
    written = []
    mimg = fid_vs_mimg_rows(stats, dataset, variants, main.sampler, main.nfe, paper_mimg)
    nfe = fid_vs_nfe_rows(stats, dataset, variants, params.duration_kimg, paper_nfe)
    baselines = {v: params.baseline(v) for v in variants if params.baseline(v)}
    main_point = (main.sampler, main.nfe)
    speed = speedup_rows(records, dataset, baselines, main_point, params.duration_kimg, paper_mimg, paper_nfe)
    pairs = paired_rows(values, dataset, baselines, main_point, params.snapshot_kimg, params.duration_kimg)
    claims = claim_rows(
        values,
        dataset,
        baselines,
        main_point,
        params.snapshot_kimg,
        params.duration_kimg,
        params.report.confirm,
    )
    confirmatory = [r for r in claims if r["role"] == "confirmatory"]
    if confirmatory and echo is not None:
        echo(f"pre-registered ({dataset}): {confirm_line(confirmatory[0], metric)}")
    outputs = {
        "claims.csv": to_csv(claims, CLAIM_COLUMNS),
        "claims.md": claims_markdown(claims, dataset, metric, [floor_note]) + code_of("claims.md"),
        "per_seed.csv": to_csv(per_seed_rows(records, dataset, variants, metric), PER_SEED_COLUMNS),
        "fid_vs_mimg.csv": to_csv(mimg, MIMG_COLUMNS),
        "fid_vs_mimg.md": fid_vs_mimg_markdown(mimg, dataset, variants, metric, [floor_note])
        + code_of("fid_vs_mimg.md", point=main_point),
        "fid_vs_nfe.csv": to_csv(nfe, NFE_COLUMNS),
        "fid_vs_nfe.md": fid_vs_nfe_markdown(nfe, dataset, variants, metric, [floor_note])
        + code_of("fid_vs_nfe.md", kimg=params.duration_kimg),
        "paired.csv": to_csv(pairs, PAIRED_COLUMNS),
        "paired.md": paired_markdown(pairs, dataset, metric, variants, [explore, floor_note])
        + code_of("paired.md"),
        "speedup.csv": to_csv(speed, SPEEDUP_COLUMNS),
        "speedup.md": speedup_markdown(
            speed, dataset, metric, bool(paper_mimg or paper_nfe), [explore, floor_note]
        )
        + code_of("speedup.md"),
    }
    for name, text in outputs.items():
        atomic_write_text(folder / name, text)
        written.append(folder / name)
    styles = line_styles({v: params.formulation(v) for v in variants})
    figures = [
        ("fid_vs_mimg.png", fid_vs_mimg_figure(mimg, dataset, styles, metric, figure_floor)),
        ("fid_vs_nfe.png", fid_vs_nfe_figure(nfe, dataset, styles, metric, figure_floor)),
        ("speedup.png", speedup_figure(speed, dataset, styles, metric)),
    ]
    for axis in params.report.ablations:
        settings = {v: params.setting(dataset, v, axis.setting) for v in axis.variants}
        formulations = {v: params.formulation(v) for v in variants}
        rows = ablation_rows(
            stats, values, dataset, axis, settings, formulations, baselines, main_point, params.duration_kimg
        )
        compared = set(axis.variants) | {baselines[v] for v in axis.variants if v in baselines}
        md = ablation_markdown(rows, dataset, metric, [explore, floor_note]) + code_of(
            f"ablation_{axis.name}.md", point=main_point, among=compared
        )
        for name, text in ((f"ablation_{axis.name}.csv", ablation_csv(rows)),
                           (f"ablation_{axis.name}.md", md)):  # fmt: skip
            atomic_write_text(folder / name, text)
            written.append(folder / name)
        figures.append(
            (f"ablation_{axis.name}.png", ablation_figure(rows, mimg, dataset, styles, metric, figure_floor))
        )
    for name, figure in figures:
        write_figure(folder / name, figure)
        written.append(folder / name)
    summary = dataset_summary(metric, main_point, mimg, pairs, speed, claims)
    return written, summary, (mimg_plot_rows(mimg), nfe_plot_rows(nfe))
