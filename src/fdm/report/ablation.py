"""Ablation axes (``report.ablations``): the final metric against a training setting's value, and the metric
over training per value.

An axis is a set of variants that differ in one training setting (FDM's multiplier, its weight-cap warmup,
how s(sigma) enters c_in, ...); each variant's value is read from its resolved settings. Per axis and
dataset, under ``reports/<dataset>/``:

- ``ablation_<axis>.{csv,md}``: per variant its value, formulation and final metric (main sampler and
  NFE, last snapshot: mean over training seeds and 95% Student-t interval), beside the same for its
  baseline (``Params.baseline``: the variant named after its base formulation), and their difference
  paired by training seed (`fdm.report.paired`: the mean of the per-seed differences, its 95% Student-t
  interval and the sign count), with Welch's unpaired interval as a secondary column: an interval that
  excludes 0 says the variant and its baseline differ at this budget, one that includes it says the
  seeds cannot tell;
- ``ablation_<axis>.png``: left, the final metric against the value, one line per formulation, the
  baselines as horizontal lines with their interval; right, the metric over training per variant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fdm.report.paired import cell, fields, paired, paired_note
from fdm.report.records import Stat
from fdm.report.speedup import CONFIDENCE
from fdm.report.tables import markdown_table, number, seeds_note, to_csv

ABLATION_COLUMNS = (
    "axis", "setting", "value", "variant", "formulation", "kimg", "sampler", "nfe", "mean", "std", "ci_low",
    "ci_high", "n", "baseline", "baseline_mean", "baseline_ci_low", "baseline_ci_high", "baseline_n",
    "difference", "difference_ci_low", "difference_ci_high", "pairs", "worse", "welch_ci_low", "welch_ci_high",
)  # fmt: skip


def ablation_rows(
    stats: Mapping[tuple, Stat],
    values: Mapping[tuple, Mapping[int, float]],
    dataset: str,
    axis,
    settings: Mapping[str, object],
    formulations: Mapping[str, str],
    baselines: Mapping[str, str | None],
    main: tuple[str, int],
    final_kimg: int,
) -> list[dict]:
    """One row per variant of ``axis`` (in its order): its setting's value (``settings``), the final metric
    and its baseline's, and their paired difference; ``values`` as ``records.by_seed``."""
    rows = []
    for variant in axis.variants:
        stat = stats.get((dataset, variant, final_kimg, *main))
        base = baselines.get(variant)
        base_stat = stats.get((dataset, base, final_kimg, *main)) if base else None
        mine = values.get((dataset, variant, final_kimg, *main), {})
        theirs = values.get((dataset, base, final_kimg, *main), {}) if base else {}
        compared = fields(paired(mine, theirs) if mine and theirs else None)
        rows.append(
            {
                "axis": axis.name, "setting": axis.setting, "value": settings[variant], "variant": variant,
                "formulation": formulations[variant], "kimg": final_kimg, "sampler": main[0], "nfe": main[1],
                "mean": stat.mean if stat else None, "std": stat.std if stat else None,
                "ci_low": stat.ci_low if stat else None, "ci_high": stat.ci_high if stat else None,
                "n": stat.n if stat else 0, "baseline": base or "",
                "baseline_mean": base_stat.mean if base_stat else None,
                "baseline_ci_low": base_stat.ci_low if base_stat else None,
                "baseline_ci_high": base_stat.ci_high if base_stat else None,
                "baseline_n": base_stat.n if base_stat else 0,
                "difference": compared["difference"], "difference_ci_low": compared["ci_low"],
                "difference_ci_high": compared["ci_high"], "pairs": compared["pairs"], "worse": compared["worse"],
                "welch_ci_low": compared["welch_ci_low"], "welch_ci_high": compared["welch_ci_high"],
            }
        )  # fmt: skip
    return rows


def _interval(mean, low, high, signed: bool = False) -> str:
    if mean is None:
        return "–"
    value = ("+" if signed and mean > 0 else "") + number(mean)
    return value if low is None else f"{value} [{number(low)}, {number(high)}]"


def ablation_markdown(rows: list[dict], dataset: str, metric: str, notes: Sequence[str] = ()) -> str:
    """The axis's table: value, variant, its final metric [interval], its baseline's."""
    axis, setting = rows[0]["axis"], rows[0]["setting"]
    sampler, nfe, kimg = rows[0]["sampler"], rows[0]["nfe"], rows[0]["kimg"]
    body = [
        [str(r["value"]), r["variant"], r["formulation"], _interval(r["mean"], r["ci_low"], r["ci_high"]),
         r["baseline"] or "–", _interval(r["baseline_mean"], r["baseline_ci_low"], r["baseline_ci_high"]),
         cell({"difference": r["difference"], "ci_low": r["difference_ci_low"], "ci_high": r["difference_ci_high"],
               "worse": r["worse"], "pairs": r["pairs"]}),
         _interval(None if r["welch_ci_low"] is None else r["difference"], r["welch_ci_low"], r["welch_ci_high"],
                   signed=True)]
        for r in rows
    ]  # fmt: skip
    lines = [
        f"# {dataset}: ablation of {setting} ({axis})",
        "",
        f"{metric} at the final snapshot ({kimg / 1000:g} Mimg), sampler {sampler} at NFE {nfe}. {seeds_note(rows)}",
        " ".join(
            [
                f"Difference: the variant less its baseline. {paired_note(rows)}",
                f"Welch: the unpaired {CONFIDENCE:.0%} interval of the difference of the means.",
                *notes,
            ]
        ),
        "",
    ]
    header = [
        setting,
        "variant",
        "formulation",
        metric,
        "baseline",
        f"baseline {metric}",
        "difference (paired)",
        "Welch",
    ]
    return "\n".join(lines + markdown_table(header, body)) + "\n"


def ablation_csv(rows: list[dict]) -> str:
    return to_csv(rows, ABLATION_COLUMNS)


def ablation_figure(
    rows: list[dict], mimg_rows: list[dict], dataset: str, styles: Mapping, metric: str, floor=None
):
    """Left: the final metric against the setting's value per formulation, baselines as bands; right: the
    metric over training of each variant of the axis and of their baselines; both with the metric's
    ``floor`` (value, label) as a line."""
    from matplotlib.figure import Figure

    from fdm.report.figures import draw_floor, legend, plot_curves

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
    draw_floor(left, floor)
    left.set_xticks(range(len(positions)), list(positions))
    left.set_xlabel(setting)
    left.set_ylabel(f"{metric} at {rows[0]['kimg'] / 1000:g} Mimg")
    left.set_title(f"{dataset}: final {metric} against {setting}")
    left.grid(True, alpha=0.3)
    left.legend(fontsize="small", title=f"mean, {CONFIDENCE:.0%} t interval", title_fontsize="x-small")
    shown = [r["variant"] for r in rows] + [r["baseline"] for r in rows if r["baseline"]]
    curves = {v: styles[v] for v in dict.fromkeys(shown)}
    plot_curves(
        right, mimg_rows, "kimg", 1000, curves, f"{dataset}: {metric} over training ({axis})", metric, floor
    )
    right.set_xlabel("training images seen (Mimg)")
    legend(right)
    return figure
