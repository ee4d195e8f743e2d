"""The report's tables: their rows (pure functions of the records) and their CSV and Markdown text.

- ``fid_vs_mimg``: the metric against training kimg at the main sampler and NFE, one row per
  (variant, kimg); ``fid_vs_nfe``: against NFE at the final snapshot, one row per (sampler, variant,
  NFE); each with the mean over training seeds, its t interval (`fdm.report.records`) and the paper's
  value where it has one.
- ``speedup``: per FDM variant, the training row (x = kimg) then one sampling row per sampler
  (x = NFE), by the definition and paired bootstrap of `fdm.report.speedup` (its robust rule, with the
  strict rule of the first version beside it), ours and the paper's.

Columns and cells are those of docs/report.md; CSV floats have six decimals, so reruns are byte-identical.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import pandas as pd

from fdm import paper_results
from fdm.report.records import Record, Stat, frame
from fdm.report.speedup import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CONFIDENCE,
    ROBUST,
    STRICT,
    Crossing,
    Curves,
    bootstrap_speedup,
    crossing,
    seed_curves,
    speedup,
)

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
    "measure", "variant", "baseline", "sampler", "baseline_at", "target", "tolerance", "baseline_reached",
    "reached", "first", "speedup", "ci_low", "ci_high", "not_reached_share", "n_baseline", "n_fdm", "pairs",
    "status", "strict_baseline_reached", "strict_reached", "strict_speedup", "strict_status",
    "paper_reached", "paper_speedup", "paper_status",
)  # fmt: skip


# Rows ---------------------------------------------------------------------------------------------------------


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


def _status(result: Crossing | None, baseline: dict, fdm: dict) -> str:
    if not baseline:
        return "no baseline runs"
    if not fdm:
        return "no runs"
    if result.reached is None:
        return "not reached"
    return "reached at first point" if result.at_first_point else "reached"


def _compare(measure, variant, baseline, sampler, ours: tuple[Curves, Curves], theirs: tuple) -> dict:
    """A speedup row from our per-seed (baseline, FDM) curves and the paper's (baseline, FDM) curves: the
    robust rule with its paired bootstrap, the strict rule beside it, and the paper's (one run each, so
    the robust rule without a tolerance)."""
    base_mean, fdm_mean = ours[0].mean(), ours[1].mean()
    mine, strict = speedup(*ours, ROBUST), speedup(*ours, STRICT)
    paper = crossing(*theirs, log=ROBUST.log)
    boot = bootstrap_speedup(*ours, ROBUST) if mine is not None else None
    return {
        "measure": measure,
        "variant": variant,
        "baseline": baseline,
        "sampler": sampler,
        "baseline_at": mine.baseline_at if mine else None,
        "target": mine.target if mine else None,
        "tolerance": mine.tolerance if mine else None,
        "baseline_reached": mine.baseline_reached if mine else None,
        "reached": mine.reached if mine else None,
        "first": mine.first if mine else None,
        "speedup": mine.speedup if mine else None,
        "ci_low": boot.ci_low if boot else None,
        "ci_high": boot.ci_high if boot else None,
        "not_reached_share": boot.not_reached if boot else None,
        "n_baseline": len(ours[0].values),
        "n_fdm": len(ours[1].values),
        "pairs": len(set(ours[0].seeds) & set(ours[1].seeds)),
        "status": _status(mine, base_mean, fdm_mean),
        "strict_baseline_reached": strict.baseline_reached if strict else None,
        "strict_reached": strict.reached if strict else None,
        "strict_speedup": strict.speedup if strict else None,
        "strict_status": _status(strict, base_mean, fdm_mean),
        "paper_reached": paper.reached if paper else None,
        "paper_speedup": paper.speedup if paper else None,
        "paper_status": _status(paper, *theirs) if all(theirs) else "",
    }


def _curves(table: pd.DataFrame, x: str) -> Curves:
    """Per-seed curves of the records in ``table`` (one variant, the other coordinates fixed) against ``x``."""
    return seed_curves(
        {
            seed: dict(zip(points[x].tolist(), points["value"].tolist(), strict=True))
            for seed, points in table.groupby("train_seed")
        }
    )


def speedup_rows(
    records: Iterable[Record],
    dataset: str,
    baselines: Mapping[str, str],
    main: tuple[str, int],
    final_kimg: int,
    paper_mimg: dict[str, dict[int, float]] | None = None,
    paper_nfe: dict[str, dict[str, dict[int, float]]] | None = None,
) -> list[dict]:
    """Training rows (measure "kimg") then sampling rows (measure "nfe", per sampler); FDM variants only.

    ``baselines`` maps each FDM variant to the variant it is measured against (``Params.baseline``), in
    profile order; ``main`` is the (sampler, nfe) of the training curves, ``final_kimg`` the snapshot of
    the NFE curves; ``paper_*`` as in ``fid_vs_mimg_rows`` and ``fid_vs_nfe_rows``.
    """
    table = frame(records)
    table = table[table.dataset == dataset]
    paper_mimg, paper_nfe = paper_mimg or {}, paper_nfe or {}

    def by_kimg(variant: str) -> Curves:
        at_main = (table.sampler == main[0]) & (table.nfe == main[1])
        return _curves(table[(table.variant == variant) & at_main], "kimg")

    def by_nfe(variant: str, sampler: str) -> Curves:
        final = (table.kimg == final_kimg) & (table.sampler == sampler)
        return _curves(table[(table.variant == variant) & final], "nfe")

    pairs = list(baselines.items())
    rows = []
    for variant, base in pairs:
        theirs = (paper_mimg.get(base, {}), paper_mimg.get(variant, {}))
        rows.append(_compare("kimg", variant, base, main[0], (by_kimg(base), by_kimg(variant)), theirs))
    samplers = sorted(set(table.sampler[table.kimg == final_kimg]) | set(paper_nfe))
    for sampler in samplers:
        for variant, base in pairs:
            paper = paper_nfe.get(sampler, {})
            ours = (by_nfe(base, sampler), by_nfe(variant, sampler))
            rows.append(
                _compare("nfe", variant, base, sampler, ours, (paper.get(base, {}), paper.get(variant, {})))
            )
    return rows


# CSV ----------------------------------------------------------------------------------------------------------


def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


def to_csv(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """Comma-separated table with a fixed float format (6 decimals) so reruns are byte-identical.

    Formatted cell by cell: a column may hold a grid point (an int, written as such) beside an
    interpolated crossing (a float), and None is an empty cell.
    """
    table = pd.DataFrame(list(rows), columns=list(columns), dtype=object)
    return table.map(_csv_value).to_csv(index=False, lineterminator="\n")


# Markdown -----------------------------------------------------------------------------------------------------


def number(value: float | None) -> str:
    """Two decimals like the paper's tables; three significant digits below 1 (KID is ~1e-3)."""
    if value is None:
        return ""
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"


def _cell(row) -> str:
    """mean [95% interval] (paper), or – where we have no run."""
    if row["mean"] is None:
        text = "–"
    elif row["ci_low"] is None:
        text = number(row["mean"])
    else:
        text = f"{number(row['mean'])} [{number(row['ci_low'])}, {number(row['ci_high'])}]"
    return text + (f" ({number(row['paper'])})" if row["paper"] is not None else "")


def markdown_table(header: Sequence[str], body: Iterable[Sequence[str]]) -> list[str]:
    # By hand: DataFrame.to_markdown (tabulate) pads every cell to its column's width and writes rules
    # such as |-----|, so it cannot write these bytes.
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in body]


def _pivot(rows, key: str, variants: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """(variant columns, table body): one line per ``key`` value, each cell mean [interval] (paper)."""
    cells = pd.DataFrame([(r[key], r["variant"], _cell(r)) for r in rows], columns=[key, "variant", "cell"])
    table = cells.pivot(index=key, columns="variant", values="cell")
    shown = [v for v in variants if v in table.columns]
    table = table.reindex(columns=shown).fillna("")
    labels = [f"{k / 1000:g}" if key == "kimg" else str(k) for k in table.index]
    return shown, [[label, *line] for label, line in zip(labels, table.to_numpy().tolist(), strict=True)]


def seeds_note(rows) -> str:
    counts = sorted({r["n"] for r in rows if r["n"]})
    seeds = "/".join(str(c) for c in counts) or "0"
    if counts and max(counts) > 1:
        note = (
            f"Mean over n={seeds} training seeds [{CONFIDENCE:.0%} Student-t confidence interval of the mean]"
        )
        if min(counts) == 1:
            note += "; no interval where n=1"
    else:
        note = (
            f"One training seed per model (n={seeds}): the values, no interval (a t interval needs two seeds)"
        )
    if any(r.get("paper") is not None for r in rows):
        note += "; the paper's value in parentheses"
    return note + "; – : not run."


def fid_vs_mimg_markdown(
    rows, dataset: str, variants: Sequence[str], metric: str, notes: Sequence[str] = ()
) -> str:
    shown, body = _pivot(rows, "kimg", variants)
    sampler, nfe = (rows[0]["sampler"], rows[0]["nfe"]) if rows else ("", "")
    lines = [
        f"# {dataset}: {metric} vs training Mimg",
        "",
        " ".join([f"Sampler {sampler} at NFE {nfe}. {seeds_note(rows)}", *notes]),
        "",
    ]
    return "\n".join(lines + markdown_table(["Mimg", *shown], body)) + "\n"


def fid_vs_nfe_markdown(
    rows, dataset: str, variants: Sequence[str], metric: str, notes: Sequence[str] = ()
) -> str:
    kimg = rows[0]["kimg"] if rows else 0
    lines = [
        f"# {dataset}: {metric} vs NFE",
        "",
        " ".join([f"Final snapshot ({kimg / 1000:g} Mimg). {seeds_note(rows)}", *notes]),
    ]
    for sampler in sorted({r["sampler"] for r in rows}):
        shown, body = _pivot([r for r in rows if r["sampler"] == sampler], "nfe", variants)
        lines += ["", f"## {sampler}", ""] + markdown_table(["NFE", *shown], body)
    return "\n".join(lines) + "\n"


def _at(value: float | None, scale: float) -> str:
    return "" if value is None else f"{value / scale:.4g}"


def _ratio(value: float) -> str:
    return f"{value:.2f}x"


def _reached(status: str, value: float | None, scale: float) -> str:
    """Where the FDM curve crosses the target, or why there is no crossing."""
    return _at(value, scale) if status.startswith("reached") else status


def _speedup_cell(status: str, ratio: float | None) -> str:
    if ratio is None:
        return ""
    return ("≥ " if status == "reached at first point" else "") + _ratio(ratio)


def _interval_cell(row) -> str:
    """The paired bootstrap interval and the share of resamples that never reach the target."""
    if row["status"] not in ("reached", "reached at first point", "not reached"):
        return ""
    if row["not_reached_share"] is None:
        return f"n={row['pairs']} seed pairs: none (needs 2)"
    low = "not reached" if row["ci_low"] is None else _ratio(row["ci_low"])
    high = "not reached" if row["ci_high"] is None else _ratio(row["ci_high"])
    text = f"[{low}, {high}]"
    share = row["not_reached_share"]
    return text + (f"; not reached in {share:.1%} of resamples" if share else "")


def _target_cell(row) -> str:
    if row["target"] is None:
        return ""
    return number(row["target"]) + (f" ± {number(row['tolerance'])}" if row["tolerance"] else "")


def speedup_markdown(rows, dataset: str, metric: str, compare_paper: bool, notes: Sequence[str] = ()) -> str:
    def cells(r, scale):
        mine = [
            _at(r["baseline_at"], scale),
            _target_cell(r),
            _at(r["baseline_reached"], scale),
            _reached(r["status"], r["reached"], scale),
            _speedup_cell(r["status"], r["speedup"]),
            _interval_cell(r),
            f"{_at(r['strict_baseline_reached'], scale)} / {_reached(r['strict_status'], r['strict_reached'], scale)}"
            if r["strict_status"].startswith(("reached", "not"))
            else "",
            _speedup_cell(r["strict_status"], r["strict_speedup"]),
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
            "target ± SE",
            f"baseline reaches at {unit}",
            f"FDM reaches at {unit}",
            "speedup",
            f"{CONFIDENCE:.0%} paired bootstrap interval",
            f"strict rule: baseline / FDM reach at {unit}",
            "strict speedup",
            "seeds (baseline/FDM)",
        ]
        return mine + (["paper: FDM reaches at", "paper speedup"] if compare_paper else [])

    training = [[r["variant"], r["baseline"], *cells(r, 1000)] for r in rows if r["measure"] == "kimg"]
    sampling = [
        [r["sampler"], r["variant"], r["baseline"], *cells(r, 1)] for r in rows if r["measure"] == "nfe"
    ]
    sampler = next((r["sampler"] for r in rows if r["measure"] == "kimg"), "")
    caption = (
        "Target: the baseline's mean value at its largest Mimg (or NFE), ± its standard error over training "
        "seeds. Each curve's cost is the first Mimg (NFE) at which its mean over training seeds is within "
        "that standard error of the target (at or below target + SE), read between grid points as a straight "
        "line in log value over log Mimg (NFE); a curve already there at its first point is credited with "
        "that point (≥: the speedup is a lower bound). Speedup = baseline cost / FDM cost; the paper claims "
        f"about {paper_results.CLAIMED_TRAINING_SPEEDUP:g}x in training and "
        f"{paper_results.CLAIMED_SAMPLING_SPEEDUP:g}x in sampling. Interval: paired percentile bootstrap over "
        f"training seeds ({BOOTSTRAP_RESAMPLES} resamples, each seed's baseline and FDM runs drawn together, "
        f'generator seed {BOOTSTRAP_SEED}); "not reached" where the interval end falls among resamples that '
        "never reach the target. Strict rule (the first version of this table): at or below the target "
        "itself, linear interpolation, no interval. With one training seed the target has no SE and the two "
        "rules differ only in the interpolation. The sampling rows' target is the baseline's value at its "
        "largest NFE, which a worse-trained FDM misses by construction: claims.md has the sampling claim in "
        "the paper's form and deconfounded. Definitions: docs/report.md."
    )
    lines = [
        f"# {dataset}: FDM speedups ({metric})",
        "",
        " ".join([caption, *notes]),
        "",
        f"## Training ({sampler}, the main sampler): Mimg to reach the baseline's final value",
        "",
    ]
    lines += markdown_table(["FDM variant", "baseline", *header("Mimg")], training)
    lines += ["", "## Sampling (final snapshot): NFE to reach the baseline's value at its largest NFE", ""]
    lines += markdown_table(["sampler", "FDM variant", "baseline", *header("NFE")], sampling)
    return "\n".join(lines) + "\n"
