"""The report's plots (matplotlib, Agg canvas, no pyplot state), from the rows of `fdm.report.tables`.

- ``fid_vs_mimg.png``, ``fid_vs_nfe.png`` (one panel per sampler): per variant the mean line and its
  95% t band, the paper's values dotted; a baseline and its FDM variant share a colour, the baseline
  solid with circles, FDM dashed with triangles; the metric's floor (real images scored as samples,
  `fdm.metrics.floor`) as a grey dash-dotted line; log y axis when every value is positive.
- ``speedup.png``: one panel for training and one per sampler; each FDM variant's speedup with its
  bootstrap whiskers, lines at 1 and at the paper's claims, the speedups of the paper's tables.

Written without the matplotlib version stamp, so a rerun writes the same bytes (docs/report.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from fdm import names, paper_results
from fdm.atomic import atomic_write
from fdm.report.speedup import CONFIDENCE

# A colour per base formulation, in fdm.names.BASES order (the first three keep the colours vp, ve and
# edm always had), repeating after ten bases.
_PALETTE = ("tab:orange", "tab:green", "tab:blue", "tab:red", "tab:purple", "tab:brown", "tab:pink",
            "tab:olive", "tab:cyan", "tab:gray")  # fmt: skip
_FAMILY_COLOR = {base: _PALETTE[i % len(_PALETTE)] for i, base in enumerate(names.BASES)}


def line_styles(formulations: Mapping[str, str]) -> dict[str, dict]:
    """Each variant's line: baselines solid with circles, FDM dashed with triangles; a family's colour
    (a baseline and its FDM variant share it) where each formulation is one variant, else a colour per
    variant (an ablation: several variants of one formulation)."""
    one_each = len(set(formulations.values())) == len(formulations)
    styles = {}
    for i, (variant, formulation) in enumerate(formulations.items()):
        family = names.base_of(formulation)
        fdm = formulation != family
        colour = _FAMILY_COLOR[family] if one_each else f"C{i % 10}"
        styles[variant] = {"color": colour, "marker": "^" if fdm else "o", "linestyle": "--" if fdm else "-"}
    return styles


def _log_scale(ax, values) -> None:
    if values and min(values) > 0:
        from matplotlib.ticker import FormatStrFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
        ax.tick_params(axis="y", which="minor", labelsize="x-small")


def draw_floor(ax, floor: tuple[float, str] | None) -> list[float]:
    """The metric's floor (value, legend label) as a horizontal line; returns [value] or []."""
    if floor is None:
        return []
    ax.axhline(floor[0], color="dimgray", linestyle="-.", linewidth=1.0, label=floor[1])
    return [floor[0]]


def plot_curves(ax, rows, x_key: str, x_scale: float, styles, title: str, metric: str, floor=None) -> None:
    """Per variant: the mean line with its 95% interval as a band; the paper's values dotted; the
    metric's ``floor`` (value, label) as a line.

    The y axis is logarithmic when every mean (and the floor) is positive; a band's lower end below half
    the smallest mean (a t interval of few seeds can reach below zero) is drawn there (the CSV keeps it).
    """
    means = [r[k] for r in rows for k in ("mean", "paper") if r[k] is not None]
    means += draw_floor(ax, floor)
    band_floor = 0.5 * min(means) if means and min(means) > 0 else -math.inf
    for variant, style in styles.items():
        mine = [r for r in rows if r["variant"] == variant and r["mean"] is not None]
        paper = [r for r in rows if r["variant"] == variant and r["paper"] is not None]
        if mine:
            xs = [r[x_key] / x_scale for r in mine]
            ax.plot(xs, [r["mean"] for r in mine], label=variant, markersize=4, **style)
            band = [r for r in mine if r["ci_low"] is not None]
            if band:
                ax.fill_between(
                    [r[x_key] / x_scale for r in band],
                    [max(r["ci_low"], band_floor) for r in band],
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


def legend(ax, note: str = "") -> None:
    """Legend outside the axes on the right: our curves first, then the paper's, then the floor."""
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: ("floor" in labels[i], "(paper)" in labels[i], i))
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


def fid_vs_mimg_figure(rows, dataset: str, styles, metric: str, floor=None):
    from matplotlib.figure import Figure  # Agg canvas, no pyplot state

    figure = Figure(figsize=(8.0, 4.4), layout="constrained")
    ax = figure.subplots()
    sampler = f"{rows[0]['sampler']}, NFE {rows[0]['nfe']}" if rows else ""
    plot_curves(ax, rows, "kimg", 1000, styles, f"{dataset}: {metric} vs training ({sampler})", metric, floor)
    ax.set_xlabel("training images seen (Mimg)")
    legend(ax, _band_note(rows))
    return figure


def fid_vs_nfe_figure(rows, dataset: str, styles, metric: str, floor=None):
    from matplotlib.figure import Figure

    samplers = sorted({r["sampler"] for r in rows}) or [""]
    figure = Figure(figsize=(4.6 * len(samplers) + 1.6, 4.4), layout="constrained")
    axes = figure.subplots(1, len(samplers), squeeze=False)[0]
    for ax, sampler in zip(axes, samplers, strict=True):
        mine = [r for r in rows if r["sampler"] == sampler]
        plot_curves(ax, mine, "nfe", 1, styles, f"{dataset}: {sampler}", metric, floor)
        ax.set_xticks(sorted({r["nfe"] for r in mine}))
        ax.set_xlabel("NFE")
    legend(axes[-1], _band_note(rows))
    return figure


def speedup_figure(rows, dataset: str, styles, metric: str):
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
            color = styles[r["variant"]]["color"]
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
    note = (
        f"{CONFIDENCE:.0%} paired bootstrap interval over training seeds" if intervals else "n=1: no interval"
    )
    figure.suptitle(f"{dataset}: FDM speedup over its baseline ({note}; ^: lower bound)", fontsize="medium")
    return figure


def write_figure(path: Path, figure) -> None:
    """PNG without the matplotlib version stamp, so that a rerun writes the same bytes."""
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120, metadata={"Software": None}))
