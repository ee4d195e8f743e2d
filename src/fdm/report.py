"""`fdm report`: the paper's tables and plots, regenerated from our evaluation records.

Input: every ``runs/<dataset>/<variant>/s<seed>/eval/<kimg>/<sampler>-<nfe>/metrics.json``. Output,
per dataset of the profile, under ``reports/<dataset>/``:

- ``fid_vs_mimg.{csv,md,png}``: the report metric against training Mimg at the dataset's main
  sampler and NFE, mean (and standard deviation) over training seeds (paper.md section 3.1);
- ``fid_vs_nfe.{csv,md,png}``: the metric against NFE per sampler at the final snapshot (section 3.2);
- ``speedup.{csv,md}``: FDM's two claims, measured (section 3.3). Training: the Mimg at which each
  FDM variant first reaches its baseline's final value, linearly interpolated between the two
  snapshots around the crossing (a variant already below the target at its first snapshot is
  credited with that snapshot, since nothing is known before it); speedup = baseline Mimg / that
  Mimg. Sampling: the smallest NFE of the grid at which the FDM variant reaches its baseline's best
  value over NFEs (no interpolation: NFEs are discrete); speedup = baseline's NFE / that NFE.

With ``report.compare_paper`` and the paper's metric (``fid_inception_legacy_tensorflow``), the
paper's numbers (``fdm.paper_results``, matched by the dataset's ``source``; FID vs Mimg only where
our main sampler and NFE are the paper's) stand beside ours: a ``paper`` column in the tables,
dashed lines in the plots, and the same speedups computed from the paper's tables. The tables are
pure functions of the records; CSV and Markdown are byte-identical across reruns, and every file is
written atomically.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path

import click

from fdm import paper_results
from fdm.atomic import atomic_write, atomic_write_text
from fdm.config import BASELINE, Params, load_params
from fdm.errors import FdmError

_RECORD_PATH = re.compile(r"s(?P<seed>\d+)/eval/(?P<kimg>\d+)/(?P<sampler>[a-z0-9_]+)-(?P<nfe>\d+)")


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


@dataclasses.dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation over training seeds (``std`` is None for one seed)."""

    mean: float
    std: float | None
    n: int


# Reading ------------------------------------------------------------------------------------------------------


def read_records(runs: str | os.PathLike, metric: str) -> list[Record]:
    """Every metrics.json under ``runs`` as a Record of ``metric``; a malformed file is an FdmError."""
    runs = Path(runs)
    records = []
    for path in sorted(runs.glob("*/*/s*/eval/*/*/metrics.json")):
        dataset, variant, *rest = path.relative_to(runs).parent.parts
        match = _RECORD_PATH.fullmatch("/".join(rest))
        if match is None:
            raise FdmError(f"{path}: expected runs/<dataset>/<variant>/s<seed>/eval/<kimg>/<sampler>-<nfe>/")
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise FdmError(f"{path}: not readable JSON ({err})") from None
        if not isinstance(metrics, dict) or metric not in metrics:
            found = ", ".join(sorted(metrics)) if isinstance(metrics, dict) else type(metrics).__name__
            raise FdmError(f"{path}: no {metric!r} (found: {found})")
        value = metrics[metric]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise FdmError(f"{path}: {metric} is {value!r}, not a finite number")
        records.append(
            Record(
                dataset=dataset,
                variant=variant,
                train_seed=int(match["seed"]),
                kimg=int(match["kimg"]),
                sampler=match["sampler"],
                nfe=int(match["nfe"]),
                value=float(value),
            )
        )
    return records


# Tables (pure) ------------------------------------------------------------------------------------------------


def aggregate(records: Iterable[Record]) -> dict[tuple, Stat]:
    """(dataset, variant, kimg, sampler, nfe) -> Stat over training seeds."""
    groups: dict[tuple, list[float]] = {}
    for r in records:
        groups.setdefault((r.dataset, r.variant, r.kimg, r.sampler, r.nfe), []).append(r.value)
    return {
        key: Stat(statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else None, len(v))
        for key, v in groups.items()
    }


def fid_vs_mimg_rows(
    stats: dict[tuple, Stat],
    dataset: str,
    variants: Sequence[str],
    sampler: str,
    nfe: int,
    paper: dict[str, dict[int, float]] | None = None,
) -> list[dict]:
    """One row per (variant, kimg) at the main sampler/NFE; ``paper``: variant -> {kimg: value}."""
    paper = paper or {}
    rows = []
    for variant in variants:
        ours = {k[2]: s for k, s in stats.items() if k[:2] == (dataset, variant) and k[3:] == (sampler, nfe)}
        theirs = paper.get(variant, {})
        for kimg in sorted(set(ours) | set(theirs)):
            stat = ours.get(kimg)
            rows.append(
                {
                    "variant": variant,
                    "kimg": kimg,
                    "mimg": kimg / 1000,
                    "sampler": sampler,
                    "nfe": nfe,
                    **_values(stat, theirs.get(kimg)),
                }
            )
    return rows


def _values(stat: Stat | None, paper: float | None) -> dict:
    """The value columns of a table row: seed count, mean and std over seeds (or none), the paper's value."""
    return {
        "seeds": stat.n if stat else 0,
        "mean": stat.mean if stat else None,
        "std": stat.std if stat else None,
        "paper": paper,
    }


def fid_vs_nfe_rows(
    stats: dict[tuple, Stat],
    dataset: str,
    variants: Sequence[str],
    kimg: int,
    paper: dict[str, dict[str, dict[int, float]]] | None = None,
) -> list[dict]:
    """One row per (sampler, variant, NFE) at snapshot ``kimg``; ``paper``: sampler -> variant -> {nfe: value}."""
    paper = paper or {}
    samplers = {k[3] for k in stats if k[0] == dataset and k[2] == kimg} | set(paper)
    rows = []
    for sampler in sorted(samplers):
        for variant in variants:
            ours = {k[4]: s for k, s in stats.items() if k[:4] == (dataset, variant, kimg, sampler)}
            theirs = paper.get(sampler, {}).get(variant, {})
            for nfe in sorted(set(ours) | set(theirs)):
                stat = ours.get(nfe)
                rows.append(
                    {
                        "sampler": sampler,
                        "variant": variant,
                        "nfe": nfe,
                        "kimg": kimg,
                        **_values(stat, theirs.get(nfe)),
                    }
                )
    return rows


def first_reach(curve: dict[float, float], target: float, interpolate: bool) -> float | None:
    """Smallest x at which the curve (x -> value, lower is better) is at or below ``target``, or None.

    With ``interpolate`` the crossing is placed on the straight line between the last point above the
    target and the first at or below it; the first point of the curve is never extrapolated from.
    """
    above = None
    for x in sorted(curve):
        y = curve[x]
        if y <= target:
            if interpolate and above is not None:
                x0, y0 = above
                return x0 + (y0 - target) / (y0 - y) * (x - x0)
            return x
        above = (x, y)
    return None


def _speedup(baseline: dict[float, float], fdm: dict[float, float], best: bool, interpolate: bool) -> dict:
    """Where ``fdm`` reaches the baseline's final (or, with ``best``, lowest) value, and the ratio."""
    if not baseline or not fdm:
        return {"at": None, "target": None, "reached": None, "first": None, "speedup": None}
    at = min(baseline, key=lambda x: (baseline[x], x)) if best else max(baseline)
    target = baseline[at]
    reached = first_reach(fdm, target, interpolate)
    first = first_reach(fdm, target, interpolate=False)
    return {
        "at": at,
        "target": target,
        "reached": reached,
        "first": first,
        "speedup": at / reached if reached else None,
    }


def _status(result: dict, baseline: dict, fdm: dict) -> str:
    if not baseline:
        return "no baseline runs"
    if not fdm:
        return "no runs"
    return "reached" if result["reached"] is not None else "not reached"


def _compare(measure, variant, baseline, sampler, ours: tuple, theirs: tuple, **how) -> dict:
    """A speedup row from the (baseline, fdm) curves of ours and of the paper."""
    mine, paper = _speedup(*ours, **how), _speedup(*theirs, **how)
    return {
        "measure": measure,
        "variant": variant,
        "baseline": baseline,
        "sampler": sampler,
        "baseline_at": mine["at"],
        "target": mine["target"],
        "reached": mine["reached"],
        "first": mine["first"],
        "speedup": mine["speedup"],
        "status": _status(mine, *ours),
        "paper_reached": paper["reached"],
        "paper_speedup": paper["speedup"],
        "paper_status": _status(paper, *theirs) if all(theirs) else "",
    }


def speedup_rows(
    stats: dict[tuple, Stat],
    dataset: str,
    variants: Sequence[str],
    main: tuple[str, int],
    final_kimg: int,
    paper_mimg: dict[str, dict[int, float]] | None = None,
    paper_nfe: dict[str, dict[str, dict[int, float]]] | None = None,
) -> list[dict]:
    """Training rows (measure "kimg") then sampling rows (measure "nfe", per sampler); FDM variants only.

    ``main`` is the (sampler, nfe) of the training curves, ``final_kimg`` the snapshot of the NFE
    curves; ``paper_*`` as in ``fid_vs_mimg_rows`` and ``fid_vs_nfe_rows``.
    """
    paper_mimg, paper_nfe = paper_mimg or {}, paper_nfe or {}

    def by_kimg(variant: str) -> dict[float, float]:
        return {k[2]: s.mean for k, s in stats.items() if k[:2] == (dataset, variant) and k[3:] == main}

    def by_nfe(variant: str, sampler: str) -> dict[float, float]:
        return {k[4]: s.mean for k, s in stats.items() if k[:4] == (dataset, variant, final_kimg, sampler)}

    pairs = [(v, BASELINE[v]) for v in variants if v in BASELINE and BASELINE[v] in variants]
    rows = []
    for variant, base in pairs:
        ours = (by_kimg(base), by_kimg(variant))
        theirs = (paper_mimg.get(base, {}), paper_mimg.get(variant, {}))
        rows.append(_compare("kimg", variant, base, main[0], ours, theirs, best=False, interpolate=True))
    samplers = sorted({k[3] for k in stats if k[0] == dataset and k[2] == final_kimg} | set(paper_nfe))
    for sampler in samplers:
        for variant, base in pairs:
            ours = (by_nfe(base, sampler), by_nfe(variant, sampler))
            paper = paper_nfe.get(sampler, {})
            theirs = (paper.get(base, {}), paper.get(variant, {}))
            rows.append(_compare("nfe", variant, base, sampler, ours, theirs, best=True, interpolate=False))
    return rows


# Formatting ---------------------------------------------------------------------------------------------------


def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


def to_csv(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """Comma-separated table with a fixed float format (6 decimals) so reruns are byte-identical."""
    lines = [",".join(columns)]
    lines += [",".join(_csv_value(row[c]) for c in columns) for row in rows]
    return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    """Two decimals like the paper's tables; three significant digits below 1 (KID is ~1e-3)."""
    if value is None:
        return ""
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"


def _cell(mean, std, paper) -> str:
    text = "–" if mean is None else _num(mean) + (f" ± {_num(std)}" if std is not None else "")
    return text + (f" ({_num(paper)})" if paper is not None else "")


def _markdown_table(header: Sequence[str], body: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in body]


def _pivot(rows, key: str, variants: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """(variant columns, table body): one line per ``key`` value, each cell mean ± std (paper)."""
    cells = {(r[key], r["variant"]): _cell(r["mean"], r["std"], r["paper"]) for r in rows}
    shown = [v for v in variants if any(r["variant"] == v for r in rows)]
    body = []
    for k in sorted({r[key] for r in rows}):
        label = f"{k / 1000:g}" if key == "kimg" else str(k)
        body.append([label] + [cells.get((k, v), "") for v in shown])
    return shown, body


def _seeds_note(rows) -> str:
    counts = sorted({r["seeds"] for r in rows if r["seeds"]})
    seeds = "/".join(str(c) for c in counts) or "0"
    note = f"Mean ± standard deviation over {seeds} training seed(s)"
    if any(r["paper"] is not None for r in rows):
        note += "; the paper's value in parentheses"
    return note + "; – : not run."


def fid_vs_mimg_markdown(rows, dataset: str, variants: Sequence[str], metric: str) -> str:
    shown, body = _pivot(rows, "kimg", variants)
    sampler, nfe = (rows[0]["sampler"], rows[0]["nfe"]) if rows else ("", "")
    lines = [
        f"# {dataset}: {metric} vs training Mimg",
        "",
        f"Sampler {sampler} at NFE {nfe}. {_seeds_note(rows)}",
        "",
    ]
    return "\n".join(lines + _markdown_table(["Mimg", *shown], body)) + "\n"


def fid_vs_nfe_markdown(rows, dataset: str, variants: Sequence[str], metric: str) -> str:
    kimg = rows[0]["kimg"] if rows else 0
    lines = [
        f"# {dataset}: {metric} vs NFE",
        "",
        f"Final snapshot ({kimg / 1000:g} Mimg). {_seeds_note(rows)}",
    ]
    for sampler in sorted({r["sampler"] for r in rows}):
        shown, body = _pivot([r for r in rows if r["sampler"] == sampler], "nfe", variants)
        lines += ["", f"## {sampler}", ""] + _markdown_table(["NFE", *shown], body)
    return "\n".join(lines) + "\n"


def _reached(status: str, value: float | None, scale: float, first: float | None = None) -> str:
    """A speedup table cell: the crossing (and the snapshot it lies before), or why there is none."""
    if status != "reached":
        return status
    text = f"{value / scale:.4g}"  # Mimg or NFE
    return text + (f" (snapshot {first / scale:g})" if first is not None and first != value else "")


def _at(value: float | None, scale: float) -> str:
    return "" if value is None else f"{value / scale:g}"


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def speedup_markdown(rows, dataset: str, metric: str, compare_paper: bool) -> str:
    def cells(r, scale):
        mine = [
            _num(r["target"]),
            _reached(r["status"], r["reached"], scale, r["first"]),
            _ratio(r["speedup"]),
        ]
        paper = [_reached(r["paper_status"], r["paper_reached"], scale), _ratio(r["paper_speedup"])]
        return mine + (paper if compare_paper else [])

    paper_header = ["paper reached", "paper speedup"] if compare_paper else []
    training = [
        [r["variant"], r["baseline"], _at(r["baseline_at"], 1000), *cells(r, 1000)]
        for r in rows
        if r["measure"] == "kimg"
    ]
    sampling = [
        [r["sampler"], r["variant"], r["baseline"], _at(r["baseline_at"], 1), *cells(r, 1)]
        for r in rows
        if r["measure"] == "nfe"
    ]
    lines = [f"# {dataset}: FDM speedups ({metric})", ""]
    lines += [
        "## Training: Mimg at which each FDM variant reaches its baseline's final value",
        "",
        "Linear interpolation between the snapshots around the crossing (an FDM run already below the "
        "target at its first snapshot is credited with that snapshot); speedup = baseline Mimg / reached Mimg.",
        "",
    ]
    header = ["FDM variant", "baseline", "baseline Mimg", "target", "reached at Mimg", "speedup"]
    lines += _markdown_table(header + paper_header, training)
    lines += [
        "",
        "## Sampling: NFE at which each FDM variant reaches its baseline's best value (final snapshot)",
        "",
        "Smallest NFE of the grid at or below the target; speedup = baseline's NFE at its best / reached NFE.",
        "",
    ]
    header = [
        "sampler",
        "FDM variant",
        "baseline",
        "baseline best at NFE",
        "target",
        "reached at NFE",
        "speedup",
    ]
    lines += _markdown_table(header + paper_header, sampling)
    return "\n".join(lines) + "\n"


# Plots --------------------------------------------------------------------------------------------------------

_FAMILY_COLOR = {"edm": "tab:blue", "vp": "tab:orange", "ve": "tab:green"}


def _style(variant: str) -> dict:
    family = variant.removeprefix("fdm_")
    fdm = variant != family
    return {
        "color": _FAMILY_COLOR.get(family, "tab:gray"),
        "marker": "^" if fdm else "o",
        "alpha": 1.0 if fdm else 0.6,
    }


def _plot_curves(ax, rows, x_key: str, x_scale: float, variants, title: str, metric: str) -> None:
    for variant in variants:
        mine = [r for r in rows if r["variant"] == variant and r["mean"] is not None]
        paper = [r for r in rows if r["variant"] == variant and r["paper"] is not None]
        style = _style(variant)
        if mine:
            xs = [r[x_key] / x_scale for r in mine]
            errs = [r["std"] or 0.0 for r in mine]
            ax.errorbar(xs, [r["mean"] for r in mine], yerr=errs, label=variant, capsize=2, **style)
        if paper:
            xs = [r[x_key] / x_scale for r in paper]
            ax.plot(xs, [r["paper"] for r in paper], linestyle="--", label=f"{variant} (paper)", **style)
    values = [r[k] for r in rows for k in ("mean", "paper") if r[k] is not None]
    if values and min(values) > 0:
        from matplotlib.ticker import FormatStrFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
        ax.tick_params(axis="y", which="minor", labelsize="x-small")
    ax.set_title(title)
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.3)


def _legend(ax) -> None:
    """Legend outside the axes on the right: our curves first, then the paper's."""
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: ("(paper)" in labels[i], i))
    if order:
        ax.legend(
            [handles[i] for i in order],
            [labels[i] for i in order],
            fontsize="small",
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
        )


def fid_vs_mimg_figure(rows, dataset: str, variants, metric: str):
    from matplotlib.figure import Figure  # Agg canvas, no pyplot state

    figure = Figure(figsize=(8.0, 4.4), layout="constrained")
    ax = figure.subplots()
    sampler = f"{rows[0]['sampler']}, NFE {rows[0]['nfe']}" if rows else ""
    _plot_curves(ax, rows, "kimg", 1000, variants, f"{dataset}: {metric} vs training ({sampler})", metric)
    ax.set_xlabel("training images seen (Mimg)")
    _legend(ax)
    return figure


def fid_vs_nfe_figure(rows, dataset: str, variants, metric: str):
    from matplotlib.figure import Figure

    samplers = sorted({r["sampler"] for r in rows}) or [""]
    figure = Figure(figsize=(4.6 * len(samplers) + 1.6, 4.4), layout="constrained")
    axes = figure.subplots(1, len(samplers), squeeze=False)[0]
    for ax, sampler in zip(axes, samplers, strict=True):
        mine = [r for r in rows if r["sampler"] == sampler]
        _plot_curves(ax, mine, "nfe", 1, variants, f"{dataset}: {sampler}", metric)
        ax.set_xlabel("NFE")
    _legend(axes[-1])
    return figure


# Writing ------------------------------------------------------------------------------------------------------


def _write_figure(path: Path, figure) -> None:
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))


MIMG_COLUMNS = ("variant", "kimg", "mimg", "sampler", "nfe", "seeds", "mean", "std", "paper")
NFE_COLUMNS = ("sampler", "variant", "nfe", "kimg", "seeds", "mean", "std", "paper")
SPEEDUP_COLUMNS = (
    "measure", "variant", "baseline", "sampler", "baseline_at", "target", "reached", "first", "speedup", "status",
    "paper_reached", "paper_speedup", "paper_status",
)  # fmt: skip


def write_report(params: Params, runs: str | os.PathLike, out: str | os.PathLike) -> list[Path]:
    """Write every table and plot of every dataset that has records; returns the files written."""
    metric = params.report.metric
    records = [r for r in read_records(runs, metric) if r.dataset in params.datasets]
    if not records:
        raise FdmError(
            f"no metrics.json with {metric} under {runs} for datasets {', '.join(params.datasets)}"
        )
    stats = aggregate(records)
    written = []
    for dataset, spec in params.datasets.items():
        if not any(r.dataset == dataset for r in records):
            continue
        main = params.eval.main[dataset]
        compare = params.report.compare_paper and metric == paper_results.METRIC
        same_main = (main.sampler, main.nfe) == (
            paper_results.MAIN_SAMPLER,
            paper_results.MAIN_NFE.get(spec.source),
        )
        paper_mimg = paper_results.fid_vs_kimg(spec.source) if compare and same_main else {}
        paper_nfe = paper_results.fid_vs_nfe(spec.source) if compare else {}
        variants = params.variants
        mimg = fid_vs_mimg_rows(stats, dataset, variants, main.sampler, main.nfe, paper_mimg)
        nfe = fid_vs_nfe_rows(stats, dataset, variants, params.duration_kimg, paper_nfe)
        speed = speedup_rows(
            stats, dataset, variants, (main.sampler, main.nfe), params.duration_kimg, paper_mimg, paper_nfe
        )
        folder = Path(out) / dataset
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
        for name, figure in (
            ("fid_vs_mimg.png", fid_vs_mimg_figure(mimg, dataset, variants, metric)),
            ("fid_vs_nfe.png", fid_vs_nfe_figure(nfe, dataset, variants, metric)),
        ):
            _write_figure(folder / name, figure)
            written.append(folder / name)
    return written


@click.command("report")
@click.option(
    "--params", "params_path", default="params.yaml", show_default=True, type=click.Path(dir_okay=False)
)
@click.option(
    "--runs", default="runs", show_default=True, type=click.Path(file_okay=False), help="Run folders."
)
@click.option(
    "--out", default="reports", show_default=True, type=click.Path(file_okay=False), help="Output folder."
)
def report(params_path: str, runs: str, out: str) -> None:
    """Tables and plots (FID vs Mimg, FID vs NFE, FDM speedups) from every metrics.json under RUNS."""
    for path in write_report(load_params(params_path), runs, out):
        click.echo(f"wrote {path}")
