"""A variant against its baseline, paired by training seed (docs/report.md, "Paired differences").

A training seed gives a variant and its baseline the same initial weights (where the networks are
alike), data order and sigma, noise and augmentation draws (``Params.seed_for``; tests/test_pairing.py),
and the evaluations share their sampling seeds. So the comparison of the two is paired: per training
seed i, d_i = value(variant, i) - value(baseline, i) (lower is better: d_i > 0 is the variant worse),
and the report gives

- the mean difference over the seeds both have, its 95% Student-t interval
  mean ± t(0.975, n-1) s_d / sqrt(n) (``scipy.stats.t``; scipy's ``ttest_rel`` gives the same interval),
- the sign count: the number of seeds on which the variant is worse ("worse in 3 of 3"),
- as a secondary column, Welch's interval of the difference of the two means, which ignores the
  pairing (unequal variances, Welch-Satterthwaite degrees of freedom).

With one seed pair there is no interval; with none, no difference. ``paired_rows`` applies it to each
FDM variant and its baseline at every snapshot (main sampler and NFE) and at every sampler/NFE point of
the final snapshot: ``paired.{csv,md}``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from scipy import stats as scipy_stats

from fdm.report.records import Stat, t_interval
from fdm.report.speedup import CONFIDENCE
from fdm.report.tables import markdown_table, number


@dataclasses.dataclass(frozen=True)
class Paired:
    """The paired comparison of a variant with its baseline over their common training seeds."""

    variant_mean: float  # over the variant's seeds
    baseline_mean: float  # over the baseline's seeds
    difference: float  # mean over the common seeds of variant - baseline
    ci_low: float | None  # Student-t interval of the mean difference; None for one pair
    ci_high: float | None
    pairs: int  # common training seeds
    worse: int  # common seeds on which the variant's value is above the baseline's
    welch_ci_low: float | None  # Welch's interval of variant_mean - baseline_mean (unpaired)
    welch_ci_high: float | None


def welch(a: Stat | None, b: Stat | None) -> tuple[float | None, float | None, float | None]:
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


def paired(variant: Mapping[int, float], baseline: Mapping[int, float]) -> Paired | None:
    """The comparison of two {training seed: value} maps; None when they share no training seed."""
    common = sorted(set(variant) & set(baseline))
    if not common:
        return None
    differences = [variant[s] - baseline[s] for s in common]
    stat = t_interval(differences)
    a, b = t_interval(list(variant.values())), t_interval(list(baseline.values()))
    _, welch_low, welch_high = welch(a, b)
    return Paired(
        variant_mean=a.mean,
        baseline_mean=b.mean,
        difference=stat.mean,
        ci_low=stat.ci_low,
        ci_high=stat.ci_high,
        pairs=stat.n,
        worse=sum(d > 0 for d in differences),
        welch_ci_low=welch_low,
        welch_ci_high=welch_high,
    )


def fields(result: Paired | None) -> dict:
    """A Paired as the CSV columns ``PAIRED_FIELDS`` (empty cells where there is no comparison)."""
    if result is None:
        return dict.fromkeys(PAIRED_FIELDS) | {"pairs": 0}
    return {name: getattr(result, name) for name in PAIRED_FIELDS}


PAIRED_FIELDS = (
    "variant_mean", "baseline_mean", "difference", "ci_low", "ci_high", "pairs", "worse", "welch_ci_low",
    "welch_ci_high",
)  # fmt: skip
PAIRED_COLUMNS = ("variant", "baseline", "kimg", "sampler", "nfe", *PAIRED_FIELDS)


def paired_rows(
    values: Mapping[tuple, Mapping[int, float]],
    dataset: str,
    baselines: Mapping[str, str],
    main: tuple[str, int],
    snapshots: Sequence[int],
    final_kimg: int,
) -> list[dict]:
    """Per variant (in ``baselines`` order): one row per snapshot at ``main``, then one per other
    sampler/NFE point of the final snapshot; ``values`` as ``records.by_seed``."""
    rows = []
    for variant, base in baselines.items():
        points = [(kimg, *main) for kimg in snapshots]
        final = sorted(
            (sampler, nfe)
            for (d, v, kimg, sampler, nfe) in values
            if (d, v, kimg) == (dataset, variant, final_kimg) and (sampler, nfe) != tuple(main)
        )
        points += [(final_kimg, sampler, nfe) for sampler, nfe in final]
        for kimg, sampler, nfe in points:
            mine = values.get((dataset, variant, kimg, sampler, nfe), {})
            theirs = values.get((dataset, base, kimg, sampler, nfe), {})
            if mine or theirs:
                result = paired(mine, theirs) if mine and theirs else None
                row = {"variant": variant, "baseline": base, "kimg": kimg, "sampler": sampler, "nfe": nfe}
                rows.append(row | fields(result))
    return rows


def signed(value: float) -> str:
    return ("+" if value > 0 else "") + number(value)


def cell(row: Mapping) -> str:
    """``+4.56 [-1.76, 10.87], worse in 3 of 3``; ``–`` where one side has no run."""
    if row.get("difference") is None:
        return "–"
    text = signed(row["difference"])
    if row["ci_low"] is not None:
        text += f" [{number(row['ci_low'])}, {number(row['ci_high'])}]"
    return f"{text}, worse in {row['worse']} of {row['pairs']}"


def paired_note(rows: Sequence[Mapping]) -> str:
    """What a paired cell means, or why it has no interval."""
    counts = sorted({r["pairs"] for r in rows if r.get("pairs")})
    if counts and max(counts) > 1:
        note = (
            "Paired by training seed: the mean over seeds of (variant - baseline) with the same training seed "
            f"[{CONFIDENCE:.0%} Student-t interval over the n={'/'.join(map(str, counts))} seed pairs], and on "
            "how many seeds the variant is worse (higher)"
        )
        if min(counts) == 1:
            note += "; no interval where n=1"
        return note + ". Welch's unpaired interval is in the CSV."
    return (
        "One training seed per model: the difference of the one pair and its sign, no interval "
        "(an interval needs two seeds)."
    )


def paired_markdown(
    rows: Sequence[Mapping],
    dataset: str,
    metric: str,
    variants: Sequence[str],
    notes: Sequence[str] = (),
    what: str = "each variant against its baseline",
) -> str:
    """One table over training (rows: Mimg) and one per sampler at the final snapshot (rows: NFE),
    one column per variant: its difference from its baseline; ``what`` is compared, in the title."""
    shown = [v for v in variants if any(r["variant"] == v for r in rows)]
    header = [f"{v} − {next(r['baseline'] for r in rows if r['variant'] == v)}" for v in shown]
    lines = [
        f"# {dataset}: {what}, paired by training seed ({metric})",
        "",
        " ".join([paired_note(rows), *notes]),
    ]
    if not rows:
        return "\n".join(lines) + "\n"
    main = (rows[0]["sampler"], rows[0]["nfe"])
    final = max(r["kimg"] for r in rows)
    cells = {(r["variant"], r["kimg"], r["sampler"], r["nfe"]): cell(r) for r in rows}
    kimgs = sorted({r["kimg"] for r in rows if (r["sampler"], r["nfe"]) == main})
    body = [[f"{k / 1000:g}", *(cells.get((v, k, *main), "–") for v in shown)] for k in kimgs]
    lines += ["", f"## Over training ({main[0]} at NFE {main[1]})", ""] + markdown_table(
        ["Mimg", *header], body
    )
    for sampler in sorted({r["sampler"] for r in rows if r["kimg"] == final}):
        nfes = sorted({r["nfe"] for r in rows if (r["kimg"], r["sampler"]) == (final, sampler)})
        if nfes == [main[1]] and sampler == main[0]:
            continue
        body = [[str(n), *(cells.get((v, final, sampler, n), "–") for v in shown)] for n in nfes]
        lines += ["", f"## Final snapshot ({final / 1000:g} Mimg), {sampler}", ""]
        lines += markdown_table(["NFE", *header], body)
    return "\n".join(lines) + "\n"
