"""The speedup definition (docs/report.md, "Speedup: one definition for training and for sampling").

Pure functions of mean curves x -> value (lower is better), where x is training kimg at the main
sampler or NFE at the final snapshot:

1. target: the baseline's mean value at its largest x;
2. cost of a curve: the smallest x at which it is at or below the target, linearly interpolated
   between the last grid point above the target and the first at or below it; a curve already there
   at its first point is credited with that point (nothing is known before it);
3. speedup = baseline's cost / FDM's cost.

Its 95% interval ("Bootstrap interval") is a percentile bootstrap over training seeds: baseline and
FDM seeds resampled independently, the mean curves, the target and the ratio recomputed, with a fixed
generator seed so that reruns are byte-identical.
"""

from __future__ import annotations

import dataclasses

import numpy as np

CONFIDENCE = 0.95  # of every interval in the report: the curves' t intervals and the speedup's bootstrap
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # numpy Generator seed of every bootstrap: the report is a pure function of the records


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
    # Not scipy.stats.bootstrap(method="percentile"): it reads the interval ends by linear interpolation
    # between resampled ratios (not "inverted_cdf", whose ends are ratios that occurred), which is undefined
    # next to a not-reached (-inf) resample, and it refuses a side with one seed instead of holding it fixed.
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
