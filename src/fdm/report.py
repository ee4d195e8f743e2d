"""`fdm report`: the paper's tables and plots, regenerated from our evaluation records.

Input: every ``runs/<dataset>/<variant>/s<seed>/eval/<kimg>/<sampler>-<nfe>/metrics.json``. Output,
per dataset of the profile, under ``reports/<dataset>/`` (how to read them: docs/report.md):

- ``fid_vs_mimg.{csv,md,png}``: the report metric against training Mimg at the dataset's main
  sampler and NFE (paper.md section 3.1); per point the mean over training seeds, its standard
  deviation and its 95% Student-t confidence interval (none for one seed);
- ``fid_vs_nfe.{csv,md,png}``: the same against NFE per sampler at the final snapshot (section 3.2);
- ``speedup.{csv,md,png}``: FDM's two claims, measured (section 3.3), with one definition for both
  axes (x = training kimg at the main sampler, or NFE at the final snapshot per sampler). The target
  is the baseline's mean value at its largest x; the cost of a curve is the smallest x at which its
  mean is at or below the target, linearly interpolated between the two grid points around the
  crossing (a curve already there at its first point is credited with that point, nothing being
  known before it); speedup = baseline cost / FDM cost. Its 95% interval is a percentile bootstrap
  over training seeds (baseline and FDM seeds resampled independently, the mean curves, the target
  and the ratio recomputed), with a fixed generator seed so that reruns are byte-identical.

With ``report.compare_paper`` and the paper's metric (``fid_inception_legacy_tensorflow``), the
paper's numbers (``fdm.paper_results``, matched by the dataset's ``source``; FID vs Mimg only where
our main sampler and NFE are the paper's) stand beside ours: a ``paper`` column in the tables,
dotted lines in the plots, and the same speedups computed from the paper's tables. The tables are
pure functions of the records; every file is byte-identical across reruns and written atomically.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import click
import numpy as np
from scipy import stats as scipy_stats

from fdm import paper_results, paths
from fdm.atomic import atomic_write, atomic_write_text
from fdm.config import Params, load_params
from fdm.errors import FdmError
from fdm.names import BASELINE

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # numpy Generator seed of every bootstrap: the report is a pure function of the records


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
    """Mean over training seeds, sample standard deviation and 95% Student-t interval (None for one seed)."""

    mean: float
    std: float | None
    n: int
    ci_low: float | None = None
    ci_high: float | None = None


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Stat:
    """Mean ± t_{(1+confidence)/2, n-1} · s / sqrt(n) of independent values (the training seeds)."""
    n = len(values)
    mean = float(np.mean(values))
    if n < 2:
        return Stat(mean, None, n)
    std = float(np.std(values, ddof=1))
    half = float(scipy_stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return Stat(mean, std, n, mean - half, mean + half)


# Reading ------------------------------------------------------------------------------------------------------


def read_records(params: Params, runs: str | os.PathLike, metric: str) -> list[Record]:
    """The ``metric`` of every evaluation of the profile whose metrics.json exists under ``runs``.

    Only the profile's points are read (its models, snapshots and sampler/NFE points), so files left by
    an earlier version of the profile do not enter the report; a malformed file is an FdmError.
    """
    records = []
    for dataset, variant, train_seed in params.models():
        run_dir = paths.run(dataset, variant, train_seed, root=str(runs))
        for kimg in params.snapshot_kimg:
            for sampler, nfe in params.points(dataset, kimg):
                path = Path(paths.metrics(run_dir, kimg, sampler, nfe))
                if path.is_file():
                    value = _metric(path, metric)
                    records.append(Record(dataset, variant, train_seed, kimg, sampler, nfe, value))
    return records


def _metric(path: Path, metric: str) -> float:
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
    return float(value)


# Tables (pure) ------------------------------------------------------------------------------------------------


def aggregate(records: Iterable[Record]) -> dict[tuple, Stat]:
    """(dataset, variant, kimg, sampler, nfe) -> Stat over training seeds, in seed order."""
    groups: dict[tuple, list[tuple[int, float]]] = {}
    for r in records:
        groups.setdefault((r.dataset, r.variant, r.kimg, r.sampler, r.nfe), []).append(
            (r.train_seed, r.value)
        )
    return {key: t_interval([v for _, v in sorted(pairs)]) for key, pairs in groups.items()}


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
    """The value columns of a table row: over training seeds (or none), then the paper's value."""
    return {
        "seeds": stat.n if stat else 0,
        "mean": stat.mean if stat else None,
        "std": stat.std if stat else None,
        "ci_low": stat.ci_low if stat else None,
        "ci_high": stat.ci_high if stat else None,
        "n": stat.n if stat else 0,
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


def first_reach(curve: dict[float, float], target: float, interpolate: bool = True) -> float | None:
    """Smallest x at which the curve (x -> value, lower is better) is at or below ``target``, or None.

    With ``interpolate`` the crossing is placed on the straight line between the last point above the
    target and the first at or below it; the first point of the curve is never extrapolated from.
    """
    above = None
    for x in sorted(curve):
        y = curve[x]
        if y <= target:
            if interpolate and above is not None and y < target:  # y == target: the grid point itself
                x0, y0 = above
                return x0 + (y0 - target) / (y0 - y) * (x - x0)
            return x
        above = (x, y)
    return None


@dataclasses.dataclass(frozen=True)
class Crossing:
    """The speedup of one FDM curve over its baseline (module docstring): target, costs and their ratio."""

    baseline_at: float  # the baseline's largest x, where the target is read
    target: float
    baseline_reached: float  # the baseline's cost: first x at or below its own final value
    reached: float | None  # the FDM variant's cost, None: not reached within its grid
    first: float | None  # the FDM grid point at or after its crossing
    at_first_point: bool  # the FDM curve is at the target at its first point: the ratio is a lower bound

    @property
    def speedup(self) -> float | None:
        return None if self.reached is None else self.baseline_reached / self.reached


def crossing(baseline: dict[float, float], fdm: dict[float, float]) -> Crossing | None:
    """The speedup definition on two mean curves (x -> value); None when either curve is empty."""
    if not baseline or not fdm:
        return None
    at = max(baseline)
    target = baseline[at]
    reached = first_reach(fdm, target)
    return Crossing(
        baseline_at=at,
        target=target,
        baseline_reached=first_reach(baseline, target),
        reached=reached,
        first=first_reach(fdm, target, interpolate=False),
        at_first_point=reached is not None and reached == min(fdm),
    )


@dataclasses.dataclass(frozen=True)
class Curves:
    """Per-seed curves of one model family member: grid ``x`` and ``values[seed, x]`` (NaN: not run)."""

    x: tuple[float, ...]
    values: np.ndarray

    def mean(self) -> dict[float, float]:
        """x -> mean over the seeds that have a value there."""
        return self.means(np.arange(len(self.values))[None])[0]

    def means(self, rows: np.ndarray) -> list[dict[float, float]]:
        """Per line of ``rows`` (seed indices, repeats allowed): x -> mean over those seeds that have a value."""
        values = self.values[rows]  # (lines, seeds, x)
        have = ~np.isnan(values)
        counts = have.sum(axis=1)
        means = np.where(have, values, 0.0).sum(axis=1) / np.maximum(counts, 1)
        return [
            {x: m for x, m, c in zip(self.x, line, count, strict=True) if c}
            for line, count in zip(means.tolist(), counts.tolist(), strict=True)
        ]


def seed_curves(points: dict[int, dict[float, float]]) -> Curves:
    """Curves from ``{train seed: {x: value}}``, seeds in ascending order."""
    xs = sorted({x for curve in points.values() for x in curve})
    seeds = sorted(points)
    values = np.array([[points[s].get(x, np.nan) for x in xs] for s in seeds], dtype=float).reshape(
        len(seeds), len(xs)
    )
    return Curves(tuple(xs), values)


@dataclasses.dataclass(frozen=True)
class Bootstrap:
    """Percentile bootstrap of the speedup: interval (None where it falls among not-reached resamples)."""

    ci_low: float | None
    ci_high: float | None
    not_reached: float  # share of resamples in which the FDM variant never reaches the target


def bootstrap_speedup(
    baseline: Curves,
    fdm: Curves,
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> Bootstrap | None:
    """Resample each side's training seeds with replacement, independently; None with one seed per side.

    A resample in which the FDM variant never reaches the target ranks below every reached ratio
    (its cost lies beyond the grid); an interval end that falls among them is None ("not reached").
    """
    n_base, n_fdm = len(baseline.values), len(fdm.values)
    if n_base < 2 and n_fdm < 2:
        return None
    rng = np.random.default_rng(seed)
    base_rows = rng.integers(0, n_base, size=(resamples, n_base))
    fdm_rows = rng.integers(0, n_fdm, size=(resamples, n_fdm))
    ratios = np.empty(resamples)
    pairs = zip(baseline.means(base_rows), fdm.means(fdm_rows), strict=True)
    for i, (base_curve, fdm_curve) in enumerate(pairs):
        result = crossing(base_curve, fdm_curve)
        ratios[i] = -np.inf if result is None or result.speedup is None else result.speedup
    tail = (1 - confidence) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail], method="inverted_cdf")
    return Bootstrap(
        ci_low=float(low) if np.isfinite(low) else None,
        ci_high=float(high) if np.isfinite(high) else None,
        not_reached=float(np.mean(np.isneginf(ratios))),
    )


def _status(result: Crossing | None, baseline: dict, fdm: dict) -> str:
    if not baseline:
        return "no baseline runs"
    if not fdm:
        return "no runs"
    if result.reached is None:
        return "not reached"
    return "reached at first point" if result.at_first_point else "reached"


def _compare(measure, variant, baseline, sampler, ours: tuple[Curves, Curves], theirs: tuple) -> dict:
    """A speedup row from our per-seed (baseline, FDM) curves and the paper's (baseline, FDM) curves."""
    base_mean, fdm_mean = ours[0].mean(), ours[1].mean()
    mine, paper = crossing(base_mean, fdm_mean), crossing(*theirs)
    boot = bootstrap_speedup(*ours) if mine is not None else None
    return {
        "measure": measure,
        "variant": variant,
        "baseline": baseline,
        "sampler": sampler,
        "baseline_at": mine.baseline_at if mine else None,
        "target": mine.target if mine else None,
        "baseline_reached": mine.baseline_reached if mine else None,
        "reached": mine.reached if mine else None,
        "first": mine.first if mine else None,
        "speedup": mine.speedup if mine else None,
        "ci_low": boot.ci_low if boot else None,
        "ci_high": boot.ci_high if boot else None,
        "not_reached_share": boot.not_reached if boot else None,
        "n_baseline": len(ours[0].values),
        "n_fdm": len(ours[1].values),
        "status": _status(mine, base_mean, fdm_mean),
        "paper_reached": paper.reached if paper else None,
        "paper_speedup": paper.speedup if paper else None,
        "paper_status": _status(paper, *theirs) if all(theirs) else "",
    }


def speedup_rows(
    records: Iterable[Record],
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
    records = [r for r in records if r.dataset == dataset]
    paper_mimg, paper_nfe = paper_mimg or {}, paper_nfe or {}

    def curves(variant: str, keep, x) -> Curves:
        points: dict[int, dict[float, float]] = {}
        for r in records:
            if r.variant == variant and keep(r):
                points.setdefault(r.train_seed, {})[x(r)] = r.value
        return seed_curves(points)

    def by_kimg(variant: str) -> Curves:
        return curves(variant, lambda r: (r.sampler, r.nfe) == main, lambda r: r.kimg)

    def by_nfe(variant: str, sampler: str) -> Curves:
        return curves(variant, lambda r: (r.kimg, r.sampler) == (final_kimg, sampler), lambda r: r.nfe)

    pairs = [(v, BASELINE[v]) for v in variants if v in BASELINE and BASELINE[v] in variants]
    rows = []
    for variant, base in pairs:
        theirs = (paper_mimg.get(base, {}), paper_mimg.get(variant, {}))
        rows.append(_compare("kimg", variant, base, main[0], (by_kimg(base), by_kimg(variant)), theirs))
    samplers = sorted({r.sampler for r in records if r.kimg == final_kimg} | set(paper_nfe))
    for sampler in samplers:
        for variant, base in pairs:
            paper = paper_nfe.get(sampler, {})
            ours = (by_nfe(base, sampler), by_nfe(variant, sampler))
            rows.append(
                _compare("nfe", variant, base, sampler, ours, (paper.get(base, {}), paper.get(variant, {})))
            )
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


def _cell(row) -> str:
    """mean [95% interval] (paper), or – where we have no run."""
    if row["mean"] is None:
        text = "–"
    elif row["ci_low"] is None:
        text = _num(row["mean"])
    else:
        text = f"{_num(row['mean'])} [{_num(row['ci_low'])}, {_num(row['ci_high'])}]"
    return text + (f" ({_num(row['paper'])})" if row["paper"] is not None else "")


def _markdown_table(header: Sequence[str], body: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in body]


def _pivot(rows, key: str, variants: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """(variant columns, table body): one line per ``key`` value, each cell mean [interval] (paper)."""
    cells = {(r[key], r["variant"]): _cell(r) for r in rows}
    shown = [v for v in variants if any(r["variant"] == v for r in rows)]
    body = []
    for k in sorted({r[key] for r in rows}):
        label = f"{k / 1000:g}" if key == "kimg" else str(k)
        body.append([label] + [cells.get((k, v), "") for v in shown])
    return shown, body


def _seeds_note(rows) -> str:
    counts = sorted({r["n"] for r in rows if r["n"]})
    seeds = "/".join(str(c) for c in counts) or "0"
    if counts and max(counts) > 1:
        note = (
            f"Mean over n={seeds} training seeds [{CONFIDENCE:.0%} Student-t confidence interval of the mean]"
        )
        if min(counts) == 1:
            note += "; no interval where n=1"
    else:
        note = f"One training seed per model (n={seeds}): the values, no interval"
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


def _at(value: float | None, scale: float) -> str:
    return "" if value is None else f"{value / scale:.4g}"


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def _reached(status: str, value: float | None, scale: float) -> str:
    """Where the FDM curve crosses the target, or why there is no crossing."""
    return _at(value, scale) if status.startswith("reached") else status


def _speedup_cell(status: str, ratio: float | None) -> str:
    if ratio is None:
        return ""
    return ("≥ " if status == "reached at first point" else "") + _ratio(ratio)


def _interval_cell(row) -> str:
    """The bootstrap interval and the share of resamples that never reach the target."""
    if row["status"] not in ("reached", "reached at first point", "not reached"):
        return ""
    if row["not_reached_share"] is None:
        return "n=1: none"
    low = "not reached" if row["ci_low"] is None else _ratio(row["ci_low"])
    high = "not reached" if row["ci_high"] is None else _ratio(row["ci_high"])
    text = f"[{low}, {high}]"
    share = row["not_reached_share"]
    return text + (f"; not reached in {share:.1%} of resamples" if share else "")


def speedup_markdown(rows, dataset: str, metric: str, compare_paper: bool) -> str:
    def cells(r, scale):
        mine = [
            _at(r["baseline_at"], scale),
            _num(r["target"]),
            _at(r["baseline_reached"], scale),
            _reached(r["status"], r["reached"], scale),
            _speedup_cell(r["status"], r["speedup"]),
            _interval_cell(r),
            f"{r['n_baseline']}/{r['n_fdm']}",
        ]
        paper = [
            _reached(r["paper_status"], r["paper_reached"], scale),
            _speedup_cell(r["paper_status"], r["paper_speedup"]),
        ]
        return mine + (paper if compare_paper else [])

    def header(unit):
        mine = [
            f"baseline final {unit}",
            "target",
            f"baseline reaches at {unit}",
            f"FDM reaches at {unit}",
            "speedup",
            f"{CONFIDENCE:.0%} bootstrap interval",
            "seeds (baseline/FDM)",
        ]
        return mine + (["paper: FDM reaches at", "paper speedup"] if compare_paper else [])

    training = [[r["variant"], r["baseline"], *cells(r, 1000)] for r in rows if r["measure"] == "kimg"]
    sampling = [
        [r["sampler"], r["variant"], r["baseline"], *cells(r, 1)] for r in rows if r["measure"] == "nfe"
    ]
    sampler = next((r["sampler"] for r in rows if r["measure"] == "kimg"), "")
    lines = [
        f"# {dataset}: FDM speedups ({metric})",
        "",
        "Target: the baseline's mean value at its largest Mimg (or NFE). Each curve's cost is the first "
        "Mimg (NFE) at which its mean over training seeds is at or below the target, linearly interpolated "
        "between grid points; a curve already there at its first point is credited with that point (≥: the "
        "speedup is a lower bound). Speedup = baseline cost / FDM cost; the paper claims about "
        f"{paper_results.CLAIMED_TRAINING_SPEEDUP:g}x in training and "
        f"{paper_results.CLAIMED_SAMPLING_SPEEDUP:g}x in sampling. Interval: percentile bootstrap over "
        f"training seeds ({BOOTSTRAP_RESAMPLES} resamples, baseline and FDM seeds drawn independently, "
        "generator seed "
        f'{BOOTSTRAP_SEED}); "not reached" where the interval end falls among resamples that never reach '
        "the target. Definitions: docs/report.md.",
        "",
        f"## Training ({sampler}, the main sampler): Mimg to reach the baseline's final value",
        "",
    ]
    lines += _markdown_table(["FDM variant", "baseline", *header("Mimg")], training)
    lines += ["", "## Sampling (final snapshot): NFE to reach the baseline's value at its largest NFE", ""]
    lines += _markdown_table(["sampler", "FDM variant", "baseline", *header("NFE")], sampling)
    return "\n".join(lines) + "\n"


# Plots --------------------------------------------------------------------------------------------------------

_FAMILY_COLOR = {"edm": "tab:blue", "vp": "tab:orange", "ve": "tab:green"}


def _style(variant: str) -> dict:
    """A family's colour for the baseline (solid, circles) and its FDM variant (dashed, triangles)."""
    family = variant.removeprefix("fdm_")
    fdm = variant != family
    return {
        "color": _FAMILY_COLOR.get(family, "tab:gray"),
        "marker": "^" if fdm else "o",
        "linestyle": "--" if fdm else "-",
    }


def _log_scale(ax, values) -> None:
    if values and min(values) > 0:
        from matplotlib.ticker import FormatStrFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
        ax.tick_params(axis="y", which="minor", labelsize="x-small")


def _plot_curves(ax, rows, x_key: str, x_scale: float, variants, title: str, metric: str) -> None:
    """Per variant: the mean line with its 95% interval as a band; the paper's values dotted.

    The y axis is logarithmic when every mean is positive; a band's lower end below half the smallest
    mean (a t interval of few seeds can reach below zero) is drawn at that floor (the CSV keeps it).
    """
    means = [r[k] for r in rows for k in ("mean", "paper") if r[k] is not None]
    floor = 0.5 * min(means) if means and min(means) > 0 else -math.inf
    for variant in variants:
        mine = [r for r in rows if r["variant"] == variant and r["mean"] is not None]
        paper = [r for r in rows if r["variant"] == variant and r["paper"] is not None]
        style = _style(variant)
        if mine:
            xs = [r[x_key] / x_scale for r in mine]
            ax.plot(xs, [r["mean"] for r in mine], label=variant, markersize=4, **style)
            band = [r for r in mine if r["ci_low"] is not None]
            if band:
                ax.fill_between(
                    [r[x_key] / x_scale for r in band],
                    [max(r["ci_low"], floor) for r in band],
                    [r["ci_high"] for r in band],
                    color=style["color"],
                    alpha=0.12 if style["linestyle"] == "-" else 0.2,
                    linewidth=0,
                )
        if paper:
            xs = [r[x_key] / x_scale for r in paper]
            ax.plot(
                xs,
                [r["paper"] for r in paper],
                label=f"{variant} (paper)",
                color=style["color"],
                marker=style["marker"],
                linestyle=":",
                alpha=0.6,
            )
    _log_scale(ax, means)
    ax.set_title(title)
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.3)


def _legend(ax, note: str = "") -> None:
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
            title=note or None,
            title_fontsize="x-small",
        )


def _band_note(rows) -> str:
    counts = sorted({r["n"] for r in rows if r["n"]})
    if counts and max(counts) > 1:
        return f"mean, {CONFIDENCE:.0%} t band\n(n={'/'.join(map(str, counts))} seeds)"
    return "n=1: no interval"


def fid_vs_mimg_figure(rows, dataset: str, variants, metric: str):
    from matplotlib.figure import Figure  # Agg canvas, no pyplot state

    figure = Figure(figsize=(8.0, 4.4), layout="constrained")
    ax = figure.subplots()
    sampler = f"{rows[0]['sampler']}, NFE {rows[0]['nfe']}" if rows else ""
    _plot_curves(ax, rows, "kimg", 1000, variants, f"{dataset}: {metric} vs training ({sampler})", metric)
    ax.set_xlabel("training images seen (Mimg)")
    _legend(ax, _band_note(rows))
    return figure


def fid_vs_nfe_figure(rows, dataset: str, variants, metric: str):
    from matplotlib.figure import Figure

    samplers = sorted({r["sampler"] for r in rows}) or [""]
    figure = Figure(figsize=(4.6 * len(samplers) + 1.6, 4.4), layout="constrained")
    axes = figure.subplots(1, len(samplers), squeeze=False)[0]
    for ax, sampler in zip(axes, samplers, strict=True):
        mine = [r for r in rows if r["sampler"] == sampler]
        _plot_curves(ax, mine, "nfe", 1, variants, f"{dataset}: {sampler}", metric)
        ax.set_xticks(sorted({r["nfe"] for r in mine}))
        ax.set_xlabel("NFE")
    _legend(axes[-1], _band_note(rows))
    return figure


def speedup_figure(rows, dataset: str, metric: str):
    """Speedup ratios with their bootstrap whiskers; lines at 1 (no gain) and at the paper's claims."""
    from matplotlib.figure import Figure

    panels = [
        ("training", [r for r in rows if r["measure"] == "kimg"], paper_results.CLAIMED_TRAINING_SPEEDUP)
    ]
    panels += [
        (
            f"sampling: {s}",
            [r for r in rows if r["measure"] == "nfe" and r["sampler"] == s],
            paper_results.CLAIMED_SAMPLING_SPEEDUP,
        )
        for s in sorted({r["sampler"] for r in rows if r["measure"] == "nfe"})
    ]
    figure = Figure(figsize=(2.2 + 2.4 * len(panels), 4.0), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, (title, panel, claim) in zip(axes, panels, strict=True):
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.axhline(claim, color="tab:red", linestyle=":", linewidth=1.2, label=f"paper's claim ({claim:g}x)")
        for i, r in enumerate(panel):
            color = _style(r["variant"])["color"]
            if r["speedup"] is None:
                ax.annotate(
                    r["status"],
                    (i, 0.0),
                    ha="center",
                    va="bottom",
                    rotation=90,
                    fontsize="x-small",
                    color=color,
                )
                continue
            low = r["ci_low"] if r["ci_low"] is not None else 0.0
            high = r["ci_high"] if r["ci_high"] is not None else r["speedup"]
            has_interval = r["not_reached_share"] is not None
            ax.errorbar(
                [i],
                [r["speedup"]],
                yerr=[[r["speedup"] - low], [high - r["speedup"]]] if has_interval else None,
                color=color,
                marker="^" if r["status"] == "reached at first point" else "o",
                capsize=4,
            )
        paper = [(i, r["paper_speedup"]) for i, r in enumerate(panel) if r["paper_speedup"] is not None]
        if paper:
            xs, ys = zip(*paper, strict=True)
            ax.plot(xs, ys, "x", color="dimgray", linestyle="none", label="the paper's tables")
        ax.set_xticks(range(len(panel)), [r["variant"] for r in panel], rotation=30, fontsize="small")
        ax.set_xlim(-0.6, max(len(panel), 1) - 0.4)
        ax.set_title(title, fontsize="medium")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize="x-small", loc="upper left")
    axes[0].set_ylabel(f"speedup ({metric})")
    axes[0].set_ylim(0.0, 1.25 * max(ax.get_ylim()[1] for ax in axes))
    intervals = any(r["not_reached_share"] is not None for r in rows)
    note = f"{CONFIDENCE:.0%} bootstrap interval over training seeds" if intervals else "n=1: no interval"
    figure.suptitle(f"{dataset}: FDM speedup over its baseline ({note}; ^: lower bound)", fontsize="medium")
    return figure


# Writing ------------------------------------------------------------------------------------------------------


def _write_figure(path: Path, figure) -> None:
    """PNG without the matplotlib version stamp, so that a rerun writes the same bytes."""
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120, metadata={"Software": None}))


MIMG_COLUMNS = (
    "variant",
    "kimg",
    "mimg",
    "sampler",
    "nfe",
    "seeds",
    "mean",
    "std",
    "ci_low",
    "ci_high",
    "n",
    "paper",
)
NFE_COLUMNS = ("sampler", "variant", "nfe", "kimg", "seeds", "mean", "std", "ci_low", "ci_high", "n", "paper")
SPEEDUP_COLUMNS = (
    "measure", "variant", "baseline", "sampler", "baseline_at", "target", "baseline_reached", "reached", "first",
    "speedup", "ci_low", "ci_high", "not_reached_share", "n_baseline", "n_fdm", "status",
    "paper_reached", "paper_speedup", "paper_status",
)  # fmt: skip


def write_report(params: Params, runs: str | os.PathLike, out: str | os.PathLike) -> list[Path]:
    """Write every table and plot of every dataset that has records; returns the files written."""
    metric = params.report.metric
    records = read_records(params, runs, metric)
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
            records, dataset, variants, (main.sampler, main.nfe), params.duration_kimg, paper_mimg, paper_nfe
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
            ("speedup.png", speedup_figure(speed, dataset, metric)),
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
