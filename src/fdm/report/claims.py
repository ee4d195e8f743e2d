"""The paper's two claims in their own form (docs/report.md, "The claims in their own form"): ``claims.{csv,md}``.

- **Training** ("about half the training cost", arXiv 2306.06991: FDM at 100 Mimg is comparable to the
  baseline at 200): the paired difference value(FDM at N/2) - value(baseline at N) over training seeds,
  at the main sampler and NFE, for every N whose half is also a snapshot. ``report.confirm`` names the
  one such comparison the profile pre-registers (family and N): the report prints it first, as
  confirmatory, and every other comparison is exploratory.
- **Sampling, the paper's form** ("about 3x fewer steps": FDM at NFE 25 at or below the baseline at 79):
  the paired difference value(FDM at NFE k) - value(baseline at NFE k'), k' the baseline's NFE nearest
  3k with k'/k in [2.5, 3.5], at the final snapshot. It compares two models as much as two step
  counts: a worse-trained FDM loses it by construction.
- **Sampling, deconfounded**: each model's own convergence in NFE, the smallest NFE at which its mean
  is within 5% of its own best mean over the NFEs evaluated, and the ratio baseline / FDM of those NFEs:
  how many steps each needs to get near what it can do, whatever that is.

Lower is better; a positive difference is FDM worse. Pairing: `fdm.report.paired`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fdm.config import Confirm
from fdm.report.paired import PAIRED_FIELDS, fields, paired, signed
from fdm.report.speedup import CONFIDENCE
from fdm.report.tables import markdown_table, number

SAMPLING_RATIO = 3.0  # the paper's "about 3x fewer steps"
SAMPLING_BAND = (2.5, 3.5)  # k'/k accepted as "about 3k" (the paper's own pair: 79/25 = 3.16)
CONVERGED = 0.05  # "within 5% of its own best"

CLAIM_COLUMNS = (
    "role", "form", "variant", "baseline", "sampler", "variant_kimg", "variant_nfe", "baseline_kimg",
    "baseline_nfe", "ratio", *PAIRED_FIELDS, "variant_best", "variant_best_nfe", "baseline_best",
    "baseline_best_nfe",
)  # fmt: skip
FORMS = {
    "training": "Training: FDM at N/2 images against its baseline at N",
    "sampling_paper": "Sampling, the paper's form: FDM at NFE k against its baseline at about 3k",
    "sampling_converged": "Sampling, deconfounded: each model's smallest NFE within 5% of its own best",
}


def _row(role, form, variant, base, sampler, at_variant, at_baseline, ratio) -> dict:
    return {
        "role": role, "form": form, "variant": variant, "baseline": base, "sampler": sampler,
        "variant_kimg": at_variant[0], "variant_nfe": at_variant[1], "baseline_kimg": at_baseline[0],
        "baseline_nfe": at_baseline[1], "ratio": ratio,
    }  # fmt: skip


def _about_three_times(k: int, grid: Sequence[int]) -> int | None:
    """The NFE of ``grid`` nearest 3k whose ratio to k lies in SAMPLING_BAND (the larger on a tie)."""
    low, high = SAMPLING_BAND
    inside = [n for n in grid if low <= n / k <= high]
    return min(inside, key=lambda n: (abs(n - SAMPLING_RATIO * k), -n)) if inside else None


def _mean(values: Mapping[int, float]) -> float:
    return sum(values.values()) / len(values)


def converged_nfe(curve: Mapping[int, float]) -> tuple[int, float, int]:
    """(NFE of the best mean, the best mean, the smallest NFE whose mean is within CONVERGED of it)."""
    best_nfe = min(curve, key=lambda n: (curve[n], n))
    best = curve[best_nfe]
    near = best + CONVERGED * abs(best)
    return best_nfe, best, min(n for n in sorted(curve) if curve[n] <= near)


def claim_rows(
    values: Mapping[tuple, Mapping[int, float]],
    dataset: str,
    baselines: Mapping[str, str],
    main: tuple[str, int],
    snapshots: Sequence[int],
    final_kimg: int,
    confirm: Confirm | None,
) -> list[dict]:
    """Training rows, then the paper's sampling form, then the deconfounded one; the pre-registered row
    first of all (also when it has no runs). ``values`` as ``records.by_seed``."""

    def at(variant, kimg, sampler, nfe):
        return values.get((dataset, variant, kimg, sampler, nfe), {})

    confirmatory, rows = [], []
    for variant, base in baselines.items():
        for n in snapshots:
            if n % 2 or n // 2 not in snapshots:
                continue
            mine, theirs = at(variant, n // 2, *main), at(base, n, *main)
            is_confirm = confirm is not None and (variant, base, n) == (
                confirm.fdm,
                confirm.baseline,
                confirm.images,
            )
            if not (mine and theirs) and not is_confirm:
                continue
            row = _row("confirmatory" if is_confirm else "exploratory", "training", variant, base, main[0],
                       (n // 2, main[1]), (n, main[1]), 2.0)  # fmt: skip
            result = paired(mine, theirs) if mine and theirs else None
            (confirmatory if is_confirm else rows).append(row | fields(result) | _no_best())
    if confirm is not None and not confirmatory:  # the pre-registered pair is not in ``baselines``
        row = _row("confirmatory", "training", confirm.fdm, confirm.baseline, main[0], (confirm.half, main[1]),
                   (confirm.images, main[1]), 2.0)  # fmt: skip
        confirmatory.append(row | fields(None) | _no_best())
    samplers = sorted({k[3] for k in values if k[0] == dataset and k[2] == final_kimg})
    sampling, converged = [], []
    for sampler in samplers:
        for variant, base in baselines.items():
            grids = {
                v: sorted(k[4] for k in values if k[:4] == (dataset, v, final_kimg, sampler))
                for v in (variant, base)
            }
            for k in grids[variant]:
                k3 = _about_three_times(k, grids[base])
                if k3 is None:
                    continue
                result = paired(at(variant, final_kimg, sampler, k), at(base, final_kimg, sampler, k3))
                row = _row("exploratory", "sampling_paper", variant, base, sampler, (final_kimg, k),
                           (final_kimg, k3), k3 / k)  # fmt: skip
                sampling.append(row | fields(result) | _no_best())
            if grids[variant] and grids[base]:
                curves = {
                    v: {n: _mean(at(v, final_kimg, sampler, n)) for n in grids[v]} for v in (variant, base)
                }
                (fb_nfe, fb, f_nfe), (bb_nfe, bb, b_nfe) = (converged_nfe(curves[v]) for v in (variant, base))
                row = _row("exploratory", "sampling_converged", variant, base, sampler, (final_kimg, f_nfe),
                           (final_kimg, b_nfe), b_nfe / f_nfe)  # fmt: skip
                converged.append(
                    row | fields(None) | {
                        "pairs": None, "variant_mean": curves[variant][f_nfe], "baseline_mean": curves[base][b_nfe],
                        "variant_best": fb, "variant_best_nfe": fb_nfe, "baseline_best": bb, "baseline_best_nfe": bb_nfe,
                    }
                )  # fmt: skip
    return confirmatory + rows + sampling + converged


def _no_best() -> dict:
    return dict.fromkeys(("variant_best", "variant_best_nfe", "baseline_best", "baseline_best_nfe"))


def _difference(row: Mapping) -> str:
    if row["difference"] is None:
        return "–"
    text = signed(row["difference"])
    return text if row["ci_low"] is None else f"{text} [{number(row['ci_low'])}, {number(row['ci_high'])}]"


def _welch(row: Mapping) -> str:
    return (
        ""
        if row["welch_ci_low"] is None
        else f"[{number(row['welch_ci_low'])}, {number(row['welch_ci_high'])}]"
    )


def _worse(row: Mapping) -> str:
    return "" if not row["pairs"] else f"{row['worse']} of {row['pairs']}"


def confirm_line(row: Mapping, metric: str) -> str:
    """The pre-registered statistic in one sentence."""
    what = (
        f"{metric} of {row['variant']} at {row['variant_kimg'] / 1000:g} Mimg less {row['baseline']} at "
        f"{row['baseline_kimg'] / 1000:g} Mimg ({row['sampler']}, NFE {row['variant_nfe']})"
    )
    if row["difference"] is None:
        return f"{what}: not available, one of the two has no runs"
    if row["ci_low"] is None:
        spread = f"one training seed pair (n={row['pairs']}), no interval"
    else:
        spread = f"{CONFIDENCE:.0%} Student-t interval over {row['pairs']} training seed pairs"
    return f"{what}: {_difference(row)} ({spread}); FDM worse on {row['worse']} of {row['pairs']} seeds"


def exploratory_note(confirm: Confirm | None) -> str:
    """The caption every comparison table carries: what is pre-registered, so that this is exploratory."""
    if confirm is None:
        return "Exploratory: the profile pre-registers no comparison (report.confirm)."
    return (
        f"Exploratory: the profile's one pre-registered comparison is {confirm.fdm} at {confirm.half / 1000:g} "
        f"Mimg against {confirm.baseline} at {confirm.images / 1000:g} Mimg (report.confirm; claims.md)."
    )


def claims_markdown(rows: Sequence[Mapping], dataset: str, metric: str, notes: Sequence[str] = ()) -> str:
    lines = [f"# {dataset}: the paper's claims in their own form ({metric})", ""]
    confirmatory = [r for r in rows if r["role"] == "confirmatory"]
    if confirmatory:
        lines += [
            f"**Pre-registered (confirmatory).** {confirm_line(confirmatory[0], metric)}. Declared in the "
            "profile before the run (report.confirm); every other comparison in this report is exploratory.",
        ]
    else:
        lines += ["No comparison is pre-registered (report.confirm): every comparison below is exploratory."]
    lines += ["", " ".join(["Lower is better; a positive difference is FDM worse.", *notes])]
    training = [r for r in rows if r["form"] == "training"]
    lines += ["", f"## {FORMS['training']}", ""]
    lines += [
        "The paper: FDM at 100 Mimg comparable to its baseline at 200 (docs/paper.md, section 7). Per row, "
        f"the mean over training seeds of FDM's value at N/2 less its baseline's at N (same training seed), "
        f"[{CONFIDENCE:.0%} Student-t interval], on how many seeds FDM is worse, and Welch's unpaired "
        "interval.",
        "",
    ]
    body = [
        [r["variant"], r["baseline"], f"{r['baseline_kimg'] / 1000:g}", _mean_cell(r["variant_mean"]),
         _mean_cell(r["baseline_mean"]), _difference(r), _worse(r), _welch(r), r["role"]]
        for r in training
    ]  # fmt: skip
    header = ["FDM variant", "baseline", "N (Mimg)", "FDM at N/2", "baseline at N", "FDM less baseline",
              "FDM worse on", "Welch", "role"]  # fmt: skip
    lines += markdown_table(header, body) if body else ["No snapshot at half of another: nothing to compare."]
    sampling = [r for r in rows if r["form"] == "sampling_paper"]
    lines += ["", f"## {FORMS['sampling_paper']}", ""]
    lines += [
        "At the final snapshot; the baseline's NFE is the one nearest 3k with a ratio in "
        f"[{SAMPLING_BAND[0]:g}, {SAMPLING_BAND[1]:g}] (the paper's pair is 25 against 79). It compares two "
        "models as much as two step counts: an FDM model trained worse loses it by construction.",
        "",
    ]
    body = [
        [r["sampler"], r["variant"], r["baseline"], str(r["variant_nfe"]), str(r["baseline_nfe"]),
         _mean_cell(r["variant_mean"]), _mean_cell(r["baseline_mean"]), _difference(r), _worse(r), _welch(r)]
        for r in sampling
    ]  # fmt: skip
    header = ["sampler", "FDM variant", "baseline", "FDM NFE", "baseline NFE", "FDM", "baseline",
              "FDM less baseline", "FDM worse on", "Welch"]  # fmt: skip
    lines += markdown_table(header, body) if body else ["No NFE pair about 3x apart was evaluated."]
    converged = [r for r in rows if r["form"] == "sampling_converged"]
    lines += ["", f"## {FORMS['sampling_converged']}", ""]
    lines += [
        "At the final snapshot, on the means over training seeds: each model's best value over the NFEs "
        f"evaluated, the smallest NFE within {CONVERGED:.0%} of it, and the ratio of the two models' NFEs "
        "(baseline / FDM; the paper's claim reads about 3).",
        "",
    ]
    body = [
        [r["sampler"], r["variant"], r["baseline"], f"{number(r['variant_best'])} (NFE {r['variant_best_nfe']})",
         str(r["variant_nfe"]), f"{number(r['baseline_best'])} (NFE {r['baseline_best_nfe']})",
         str(r["baseline_nfe"]), f"{r['ratio']:.2f}"]
        for r in converged
    ]  # fmt: skip
    header = ["sampler", "FDM variant", "baseline", "FDM best", "FDM within 5% from NFE", "baseline best",
              "baseline within 5% from NFE", "NFE ratio"]  # fmt: skip
    lines += markdown_table(header, body) if body else ["No NFE study at the final snapshot."]
    return "\n".join(lines) + "\n"


def _mean_cell(value: float | None) -> str:
    return "–" if value is None else number(value)
