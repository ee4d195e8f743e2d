"""The speedup definition (docs/report.md, "Speedup: one definition for training and for sampling").

Pure functions of mean curves x -> value (lower is better), where x is training kimg at the main
sampler or NFE at the final snapshot:

1. target: the baseline's mean value at its largest x, and its standard error over training seeds;
2. cost of a curve: the smallest x at which it is within the target's standard error (at or below
   target + SE), reading the curve between grid points as a straight line in log value over log x
   (a power law; linear in value where a value is not positive); a curve already there at its first
   point is credited with that point (nothing is known before it);
3. speedup = baseline's cost / FDM's cost.

This is the ``ROBUST`` rule. The first version of the report used the ``STRICT`` one: at or below the
target itself, linear interpolation. On a plateau it turns on noise (FDM-EDM "not reached" by 0.008
FID in the long ablation, docs/report.md), so it is kept only as a column beside the robust one. With
one training seed there is no standard error, and the robust rule reads "at or below the target".

Its 95% interval ("Bootstrap interval") is a paired percentile bootstrap over training seeds: one draw
of seeds with replacement serves both curves (a seed's baseline and FDM runs share their initial
weights and training draws: tests/test_pairing.py), the mean curves, the target, its standard error
and the ratio recomputed, with a fixed generator seed so that reruns are byte-identical.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

CONFIDENCE = 0.95  # of every interval in the report: the curves' t intervals and the speedup's bootstrap
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # numpy Generator seed of every bootstrap: the report is a pure function of the records


def first_reach(
    curve: dict[float, float], target: float, interpolate: bool = True, log: bool = False
) -> float | None:
    """Smallest x at which the curve (x -> value, lower is better) is at or below ``target``, or None.

    With ``interpolate`` the crossing is placed on the line between the last point above the target and
    the first at or below it: straight in (x, value), or with ``log`` in (log x, log value) where the
    two values and the target are positive (else straight in (log x, value)). The first point of the
    curve is never extrapolated from.
    """
    above = None
    for x in sorted(curve):
        y = curve[x]
        if y <= target:
            if interpolate and above is not None and y < target:  # y == target: the grid point itself
                x0, y0 = above
                if not (log and x0 > 0):
                    return x0 + (y0 - target) / (y0 - y) * (x - x0)
                if y > 0:  # then y0 > target > y > 0
                    fraction = math.log(y0 / target) / math.log(y0 / y)
                else:
                    fraction = (y0 - target) / (y0 - y)
                return x0 * (x / x0) ** fraction
            return x
        above = (x, y)
    return None


@dataclasses.dataclass(frozen=True)
class Crossing:
    """The speedup of one FDM curve over its baseline (module docstring): target, costs and their ratio."""

    baseline_at: float  # the baseline's largest x, where the target is read
    target: float
    tolerance: float  # the target's standard error over seeds (ROBUST), 0 for STRICT or one seed
    baseline_reached: float  # the baseline's cost: first x within the tolerance of its own final value
    reached: float | None  # the FDM variant's cost, None: not reached within its grid
    first: float | None  # the FDM grid point at or after its crossing
    at_first_point: bool  # the FDM curve is at the target at its first point: the ratio is a lower bound

    @property
    def threshold(self) -> float:
        return self.target + self.tolerance

    @property
    def speedup(self) -> float | None:
        return None if self.reached is None else self.baseline_reached / self.reached


def crossing(
    baseline: dict[float, float], fdm: dict[float, float], tolerance: float = 0.0, log: bool = False
) -> Crossing | None:
    """The speedup definition on two mean curves (x -> value); None when either curve is empty.

    Reached means at or below the baseline's final value plus ``tolerance``; ``log`` interpolates in
    log-log (``first_reach``). The defaults are the STRICT rule.
    """
    if not baseline or not fdm:
        return None
    at = max(baseline)
    target = baseline[at]
    threshold = target + tolerance
    reached = first_reach(fdm, threshold, log=log)
    return Crossing(
        baseline_at=at,
        target=target,
        tolerance=tolerance,
        baseline_reached=first_reach(baseline, threshold, log=log),
        reached=reached,
        first=first_reach(fdm, threshold, interpolate=False),
        at_first_point=reached is not None and reached == min(fdm),
    )


@dataclasses.dataclass(frozen=True)
class Rule:
    """When a curve has reached the target: within its standard error or not, read in log-log or not."""

    name: str
    tolerance: bool
    log: bool


ROBUST = Rule("robust", tolerance=True, log=True)  # the report's definition
STRICT = Rule("strict", tolerance=False, log=False)  # the first version's: at or below the target


@dataclasses.dataclass(frozen=True)
class Curves:
    """Per-seed curves of one model: grid ``x``, ``values[seed, x]`` (NaN: not run) and the training seeds."""

    x: tuple[float, ...]
    values: np.ndarray
    seeds: tuple[int, ...] = ()

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

    def final_errors(self, rows: np.ndarray) -> np.ndarray:
        """Per line of ``rows``: the standard error s / sqrt(n) of the mean at the line's largest x with a
        value, over the seeds that have one there; 0 where fewer than two do."""
        values = self.values[rows]  # (lines, seeds, x)
        have = ~np.isnan(values)
        errors = np.zeros(len(values))
        for i, (line, mask) in enumerate(zip(values, have, strict=True)):
            columns = np.flatnonzero(mask.any(axis=0))
            if len(columns):
                final = line[mask[:, columns[-1]], columns[-1]]
                if len(final) > 1:
                    errors[i] = np.std(final, ddof=1) / math.sqrt(len(final))
        return errors


def seed_curves(points: dict[int, dict[float, float]]) -> Curves:
    """Curves from ``{train seed: {x: value}}``, seeds in ascending order."""
    xs = sorted({x for curve in points.values() for x in curve})
    seeds = sorted(points)
    values = np.array([[points[s].get(x, np.nan) for x in xs] for s in seeds], dtype=float).reshape(
        len(seeds), len(xs)
    )
    return Curves(tuple(xs), values, tuple(seeds))


def speedup(baseline: Curves, fdm: Curves, rule: Rule = ROBUST) -> Crossing | None:
    """The definition (module docstring) on the mean curves of every seed, by ``rule``."""
    every = np.arange(len(baseline.values))[None]
    tolerance = float(baseline.final_errors(every)[0]) if rule.tolerance and len(baseline.values) else 0.0
    return crossing(baseline.mean(), fdm.mean(), tolerance, rule.log)


@dataclasses.dataclass(frozen=True)
class Bootstrap:
    """Percentile bootstrap of the speedup: interval (None where it falls among not-reached resamples)."""

    ci_low: float | None
    ci_high: float | None
    not_reached: float  # share of resamples in which the FDM variant never reaches the target
    pairs: int  # training seeds with both a baseline and an FDM run: what is resampled


def bootstrap_speedup(
    baseline: Curves,
    fdm: Curves,
    rule: Rule = ROBUST,
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> Bootstrap | None:
    """Resample the training seeds both curves have, with replacement, the same draw for both (paired);
    None with fewer than two such seeds.

    A resample in which the FDM variant never reaches the target ranks below every reached ratio
    (its cost lies beyond the grid); an interval end that falls among them is None ("not reached").
    """
    # Not scipy.stats.bootstrap(method="percentile", paired=True): it reads the interval ends by linear
    # interpolation between resampled ratios (not "inverted_cdf", whose ends are ratios that occurred),
    # which is undefined next to a not-reached (-inf) resample.
    common = sorted(set(baseline.seeds) & set(fdm.seeds))
    if len(common) < 2:
        return None
    base_index = np.array([baseline.seeds.index(s) for s in common])
    fdm_index = np.array([fdm.seeds.index(s) for s in common])
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(common), size=(resamples, len(common)))
    tolerances = baseline.final_errors(base_index[rows]) if rule.tolerance else np.zeros(resamples)
    ratios = np.empty(resamples)
    lines = zip(baseline.means(base_index[rows]), fdm.means(fdm_index[rows]), tolerances, strict=True)
    for i, (base_curve, fdm_curve, tolerance) in enumerate(lines):
        result = crossing(base_curve, fdm_curve, float(tolerance), rule.log)
        ratios[i] = -np.inf if result is None or result.speedup is None else result.speedup
    tail = (1 - confidence) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail], method="inverted_cdf")
    return Bootstrap(
        ci_low=float(low) if np.isfinite(low) else None,
        ci_high=float(high) if np.isfinite(high) else None,
        not_reached=float(np.mean(np.isneginf(ratios))),
        pairs=len(common),
    )
