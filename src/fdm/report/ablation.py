"""Ablation axes (``report.ablations``): the final metric against a training setting's value, and the metric
over training per value.

An axis is a set of variants that differ in one training setting (FDM's multiplier, its weight-cap warmup,
how s(sigma) enters c_in, ...); each variant's value is read from its resolved settings. Per axis and
dataset, under ``reports/<dataset>/``:

- ``ablation_<axis>.{csv,md}``: per variant its value, formulation and final metric (main sampler and
  NFE, last snapshot: mean over training seeds and 95% Student-t interval), beside the same for its
  baseline (``Params.baseline``: the variant named after its base formulation), and the difference of
  the two means with its 95% Welch interval (``difference``): an interval that excludes 0 says the
  variant and its baseline differ at this budget, one that includes it says the seeds cannot tell;
- ``ablation_<axis>.png``: left, the final metric against the value, one line per formulation, the
  baselines as horizontal lines with their interval; right, the metric over training per variant.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from scipy import stats as scipy_stats

from fdm.report.records import Stat
from fdm.report.speedup import CONFIDENCE
from fdm.report.tables import markdown_table, number, seeds_note, to_csv

ABLATION_COLUMNS = (
    "axis", "setting", "value", "variant", "formulation", "kimg", "sampler", "nfe", "mean", "std", "ci_low",
    "ci_high", "n", "baseline", "baseline_mean", "baseline_ci_low", "baseline_ci_high", "baseline_n",
    "difference", "difference_ci_low", "difference_ci_high",
)  # fmt: skip


def difference(a: Stat | None, b: Stat | None) -> tuple[float | None, float | None, float | None]:
    """a.mean - b.mean and its Welch t interval (unequal variances; Welch 1947), from the two Stats.

    The standard error is sqrt(s_a^2/n_a + s_b^2/n_b) with Welch-Satterthwaite's degrees of freedom. None
    where a side is missing; no interval where a side has one seed or both have no spread.
    """
    if a is None or b is None:
        return None, None, None
    delta = a.mean - b.mean
    if a.std is None or b.std is None or a.n < 2 or b.n < 2:
        return delta, None, None
    va, vb = a.std**2 / a.n, b.std**2 / b.n
    if va + vb == 0:
        return delta, None, None
    dof = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))
    half = scipy_stats.t.ppf(0.5 + CONFIDENCE / 2, dof) * math.sqrt(va + vb)
    return delta, delta - half, delta + half


def ablation_rows(
    stats: Mapping[tuple, Stat],
    dataset: str,
    axis,
    values: Mapping[str, object],
    formulations: Mapping[str, str],
    baselines: Mapping[str, str | None],
    main: tuple[str, int],
    final_kimg: int,
) -> list[dict]:
    """One row per variant of ``axis`` (in its order): the final metric and its baseline's."""
    rows = []
    for variant in axis.variants:
        stat = stats.get((dataset, variant, final_kimg, *main))
        base = baselines.get(variant)
        base_stat = stats.get((dataset, base, final_kimg, *main)) if base else None
        delta, delta_low, delta_high = difference(stat, base_stat)
        rows.append(
            {
                "axis": axis.name, "setting": axis.setting, "value": values[variant], "variant": variant,
                "formulation": formulations[variant], "kimg": final_kimg, "sampler": main[0], "nfe": main[1],
                "mean": stat.mean if stat else None, "std": stat.std if stat else None,
                "ci_low": stat.ci_low if stat else None, "ci_high": stat.ci_high if stat else None,
                "n": stat.n if stat else 0, "baseline": base or "",
                "baseline_mean": base_stat.mean if base_stat else None,
                "baseline_ci_low": base_stat.ci_low if base_stat else None,
                "baseline_ci_high": base_stat.ci_high if base_stat else None,
                "baseline_n": base_stat.n if base_stat else 0,
                "difference": delta, "difference_ci_low": delta_low, "difference_ci_high": delta_high,
            }
        )  # fmt: skip
    return rows


def _interval(mean, low, high, signed: bool = False) -> str:
    if mean is None:
        return "–"
    value = ("+" if signed and mean > 0 else "") + number(mean)
    return value if low is None else f"{value} [{number(low)}, {number(high)}]"


def ablation_markdown(rows: list[dict], dataset: str, metric: str) -> str:
    """The axis's table: value, variant, its final metric [interval], its baseline's."""
    axis, setting = rows[0]["axis"], rows[0]["setting"]
    sampler, nfe, kimg = rows[0]["sampler"], rows[0]["nfe"], rows[0]["kimg"]
    body = [
        [str(r["value"]), r["variant"], r["formulation"], _interval(r["mean"], r["ci_low"], r["ci_high"]),
         r["baseline"] or "–", _interval(r["baseline_mean"], r["baseline_ci_low"], r["baseline_ci_high"]),
         _interval(r["difference"], r["difference_ci_low"], r["difference_ci_high"], signed=True)]
        for r in rows
    ]  # fmt: skip
    lines = [
        f"# {dataset}: ablation of {setting} ({axis})",
        "",
        f"{metric} at the final snapshot ({kimg / 1000:g} Mimg), sampler {sampler} at NFE {nfe}. {seeds_note(rows)}",
        f"Difference: the variant's mean less its baseline's, [{CONFIDENCE:.0%} Welch t interval].",
        "",
    ]
    header = [setting, "variant", "formulation", metric, "baseline", f"baseline {metric}", "difference"]
    return "\n".join(lines + markdown_table(header, body)) + "\n"


def ablation_csv(rows: list[dict]) -> str:
    return to_csv(rows, ABLATION_COLUMNS)


def ablation_figure(rows: list[dict], mimg_rows: list[dict], dataset: str, styles: Mapping, metric: str):
    """Left: the final metric against the setting's value per formulation, baselines as bands; right: the
    metric over training of each variant of the axis and of their baselines."""
    from matplotlib.figure import Figure

    from fdm.report.figures import legend, plot_curves

    axis, setting = rows[0]["axis"], rows[0]["setting"]
    figure = Figure(figsize=(12.0, 4.4), layout="constrained")
    left, right = figure.subplots(1, 2)
    labels = [str(r["value"]) for r in rows]
    positions = {label: i for i, label in enumerate(dict.fromkeys(labels))}
    for formulation in dict.fromkeys(r["formulation"] for r in rows):
        mine = [r for r in rows if r["formulation"] == formulation and r["mean"] is not None]
        if not mine:
            continue
        colour = styles[mine[0]["variant"]]["color"]
        xs = [positions[str(r["value"])] for r in mine]
        low = [r["mean"] - r["ci_low"] if r["ci_low"] is not None else 0.0 for r in mine]
        high = [r["ci_high"] - r["mean"] if r["ci_high"] is not None else 0.0 for r in mine]
        left.errorbar(xs, [r["mean"] for r in mine], yerr=[low, high], color=colour, marker="^", capsize=4,
                      linestyle="--", label=formulation)  # fmt: skip
        base = next((r for r in mine if r["baseline_mean"] is not None), None)
        if base is not None:
            colour = styles[base["baseline"]]["color"]
            left.axhline(
                base["baseline_mean"], color=colour, linewidth=1.0, label=f"{base['baseline']} (baseline)"
            )
            if base["baseline_ci_low"] is not None:
                left.axhspan(
                    base["baseline_ci_low"], base["baseline_ci_high"], color=colour, alpha=0.1, linewidth=0
                )
    left.set_xticks(range(len(positions)), list(positions))
    left.set_xlabel(setting)
    left.set_ylabel(f"{metric} at {rows[0]['kimg'] / 1000:g} Mimg")
    left.set_title(f"{dataset}: final {metric} against {setting}")
    left.grid(True, alpha=0.3)
    left.legend(fontsize="small", title=f"mean, {CONFIDENCE:.0%} t interval", title_fontsize="x-small")
    shown = [r["variant"] for r in rows] + [r["baseline"] for r in rows if r["baseline"]]
    curves = {v: styles[v] for v in dict.fromkeys(shown)}
    plot_curves(right, mimg_rows, "kimg", 1000, curves, f"{dataset}: {metric} over training ({axis})", metric)
    right.set_xlabel("training images seen (Mimg)")
    legend(right)
    return figure
