"""The speedup definition (docs/report.md, "Speedup"), on curves whose crossings are computed by hand."""

import itertools
import math

import numpy as np
import pytest

from fdm.report.speedup import Curves, bootstrap_speedup, crossing, first_reach, seed_curves


def test_first_reach():
    curve = {10: 5.0, 20: 3.0, 40: 1.0}
    assert first_reach(curve, 3.0, interpolate=True) == 20
    assert first_reach(curve, 2.0, interpolate=True) == pytest.approx(30.0)
    assert first_reach(curve, 2.0, interpolate=False) == 40
    assert first_reach(curve, 6.0, interpolate=True) == 10  # never extrapolated before the first point
    assert first_reach(curve, 0.5, interpolate=True) is None
    assert first_reach({40: 1.0, 10: 5.0, 20: 3.0}, 2.0) == pytest.approx(30.0)  # in x order, not insertion
    assert first_reach({}, 1.0) is None


def test_crossing_interpolates_between_the_grid_points_around_the_target():
    """Target 2 (the baseline at 40, reached there first); FDM goes 2.5 -> 1 between 20 and 40:
    20 + (2.5 - 2) / (2.5 - 1) * 20 = 80/3, speedup 40 / (80/3) = 1.5."""
    result = crossing({10: 5.0, 20: 3.0, 40: 2.0}, {10: 4.0, 20: 2.5, 40: 1.0})
    assert (result.baseline_at, result.target, result.baseline_reached) == (40, 2.0, 40)
    assert result.reached == pytest.approx(80 / 3) and result.first == 40
    assert result.speedup == pytest.approx(1.5) and not result.at_first_point


def test_a_curve_at_the_target_on_a_grid_point_costs_that_point():
    result = crossing({5: 3.0, 9: 2.5, 15: 2.4, 25: 2.4}, {5: 2.6, 9: 2.4, 15: 2.0})
    assert (result.baseline_reached, result.reached, result.first) == (15, 9, 9)  # no interpolation
    assert result.speedup == pytest.approx(15 / 9)


def test_a_baseline_that_dips_early_is_charged_its_first_crossing():
    """Baseline 4, 1, 2 at 10, 20, 30: its final 2 is first reached at 10 + (4 - 2) / (4 - 1) * 10 = 50/3."""
    result = crossing({10: 4.0, 20: 1.0, 30: 2.0}, {10: 3.0, 20: 1.0})
    assert result.baseline_reached == pytest.approx(50 / 3)
    assert result.reached == pytest.approx(15.0)  # 10 + (3 - 2) / (3 - 1) * 10
    assert result.speedup == pytest.approx((50 / 3) / 15)


def test_at_the_target_at_the_first_point_is_a_lower_bound():
    """Nothing is known before the first grid point: FDM is credited with it (paper: NFE 25 vs 79)."""
    result = crossing({25: 3.0, 79: 2.4}, {25: 2.2, 35: 2.1})
    assert (result.reached, result.first, result.at_first_point) == (25, 25, True)
    assert result.speedup == pytest.approx(79 / 25)


def test_not_reached_has_no_ratio():
    result = crossing({10: 5.0, 40: 2.0}, {10: 6.0, 40: 2.5})
    assert (result.target, result.baseline_reached) == (2.0, 40)
    assert (result.reached, result.first, result.speedup, result.at_first_point) == (None, None, None, False)


def test_an_empty_curve_has_no_crossing():
    assert crossing({}, {10: 1.0}) is None and crossing({10: 1.0}, {}) is None


def test_seed_curves_and_their_means_over_the_seeds_that_ran():
    curves = seed_curves({2: {10: 1.0, 20: 3.0}, 0: {10: 3.0}})  # seed 0 has no run at 20
    assert curves.x == (10, 20)
    np.testing.assert_array_equal(curves.values, [[3.0, np.nan], [1.0, 3.0]])  # seeds 0, 2
    assert curves.mean() == {10: 2.0, 20: 3.0}
    lines = curves.means(np.array([[0, 0], [1, 1], [0, 1]]))  # seed indices, with repeats
    assert lines == [{10: 3.0}, {10: 1.0, 20: 3.0}, {10: 2.0, 20: 3.0}]
    empty = seed_curves({})
    assert (empty.x, empty.values.shape, empty.mean()) == ((), (0, 0), {})


# Bootstrap. With two FDM seeds a, b and one baseline seed, a resample of FDM's seeds is aa, bb (1/4 each)
# or ab (1/2): only three ratios can occur, and with 2000 resamples the 2.5% and 97.5% quantiles
# (inverted_cdf) are the smallest and the largest of them.

BASELINE = seed_curves({0: {10: 4.0, 20: 2.0}})  # target 2, reached at 20


def test_bootstrap_interval_ends_are_the_extreme_resampled_ratios():
    """a: 3 -> 1 crosses 2 at 15 (ratio 4/3); b: 3 -> 2 at 20 (1); ab: 3 -> 1.5 at 10 + 10/1.5 (1.2)."""
    fdm = seed_curves({0: {10: 3.0, 20: 1.0}, 1: {10: 3.0, 20: 2.0}})
    assert crossing(BASELINE.mean(), fdm.mean()).speedup == pytest.approx(1.2)
    boot = bootstrap_speedup(BASELINE, fdm)
    assert (boot.ci_low, boot.ci_high, boot.not_reached) == (pytest.approx(1.0), pytest.approx(4 / 3), 0.0)
    median = bootstrap_speedup(BASELINE, fdm, confidence=0.0)  # both ends at the median: ab
    assert (median.ci_low, median.ci_high) == (pytest.approx(1.2), pytest.approx(1.2))


def test_bootstrap_resamples_the_baseline_and_recomputes_its_target():
    """Baseline seeds c (4 -> 2) and d (4 -> 3), FDM fixed at 3 -> 1: target 2 (cc), 3 (dd) or 2.5 (cd),
    each reached by the baseline at 20; FDM crosses it at 15, 10 (its first point) or 12.5."""
    baseline = seed_curves({0: {10: 4.0, 20: 2.0}, 1: {10: 4.0, 20: 3.0}})
    boot = bootstrap_speedup(baseline, seed_curves({0: {10: 3.0, 20: 1.0}}))
    assert (boot.ci_low, boot.ci_high, boot.not_reached) == (pytest.approx(20 / 15), pytest.approx(2.0), 0.0)


def test_bootstrap_ranks_not_reached_below_every_ratio():
    """a reaches at 15 (4/3); b stays at 3 and never does; ab: 3 -> 2 at 20 (1). A quarter of the
    resamples (bb) never reach: the lower end falls among them, the upper end is a's ratio."""
    fdm = seed_curves({0: {10: 3.0, 20: 1.0}, 1: {10: 3.0, 20: 3.0}})
    boot = bootstrap_speedup(BASELINE, fdm)
    assert boot.ci_low is None and boot.ci_high == pytest.approx(4 / 3)
    assert boot.not_reached == pytest.approx(1 / 4, abs=0.04)  # binomial: sd sqrt(3/16 / 2000) = 0.01
    never = bootstrap_speedup(BASELINE, seed_curves({0: {10: 3.0, 20: 2.5}, 1: {10: 3.0, 20: 3.0}}))
    assert (never.ci_low, never.ci_high, never.not_reached) == (None, None, 1.0)


def test_bootstrap_is_a_pure_function_of_the_records():
    baseline = seed_curves({0: {1: 3.0, 2: 2.0}, 1: {1: 3.5, 2: 2.2}, 2: {1: 2.8, 2: 1.9}})
    fdm = seed_curves({0: {1: 2.5, 2: 1.5}, 1: {1: 2.1, 2: 1.4}})
    assert bootstrap_speedup(baseline, fdm) == bootstrap_speedup(baseline, fdm)
    assert bootstrap_speedup(seed_curves({0: {1: 1.0}}), seed_curves({0: {1: 1.0}})) is None  # n = 1 each
    one_baseline = bootstrap_speedup(seed_curves({0: {1: 3.0, 2: 2.0}}), fdm)  # only FDM's seeds vary
    assert one_baseline is not None and one_baseline.not_reached == 0.0


def test_curves_hold_missing_runs_as_nan():
    curves = Curves((10, 20), np.array([[1.0, math.nan], [3.0, 5.0]]))
    assert curves.mean() == {10: 2.0, 20: 5.0}


def test_bootstrap_interval_ends_are_ratios_a_resample_can_produce():
    """A percentile interval's ends are order statistics of the resampled ratios (docs/report.md), never a
    value between two of them. Eight FDM seeds, one baseline seed: every resample is a multiset of the
    eight curves, so the ratios that can occur are enumerated here from the definition, by hand: target 2
    reached by the baseline at 20; a resample whose mean at 20 is m < 2 crosses at 10 + 10 / (3 - m)."""
    finals = [1.13, 0.61, 1.87, 0.95, 1.42, 0.77, 1.66, 1.29]
    fdm = seed_curves({seed: {10: 3.0, 20: value} for seed, value in enumerate(finals)})
    possible = np.array(
        sorted(
            {
                20 / (10 + 10 / (3 - sum(finals[i] for i in picks) / len(finals)))
                for picks in itertools.combinations_with_replacement(range(len(finals)), len(finals))
            }
        )
    )
    for confidence in (0.95, 0.8, 0.5):
        boot = bootstrap_speedup(BASELINE, fdm, confidence=confidence)
        assert boot.not_reached == 0.0
        for end in (boot.ci_low, boot.ci_high):
            assert np.min(np.abs(possible - end)) <= 1e-12 * end, (confidence, end)
    assert possible.min() < boot.ci_low < boot.ci_high < possible.max()
