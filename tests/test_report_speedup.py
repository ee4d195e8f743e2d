"""The speedup definition (docs/report.md, "Speedup"), on curves whose crossings are computed by hand.

The strict rule (at or below the target, linear interpolation: the first version) is what `crossing`
does by default; the robust rule (within the target's standard error, log-log interpolation) is the
report's, tested below on power laws, which are straight lines in log-log, and on the long ablation.
"""

import itertools
import math

import numpy as np
import pytest

from fdm.report.speedup import (
    ROBUST,
    STRICT,
    Curves,
    bootstrap_speedup,
    crossing,
    first_reach,
    seed_curves,
    speedup,
)


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
    assert curves.seeds == (0, 2)
    empty = seed_curves({})
    assert (empty.x, empty.values.shape, empty.mean()) == ((), (0, 0), {})


# Robust rule ---------------------------------------------------------------------------------------------------


def test_log_log_interpolation_is_exact_on_a_power_law():
    """y = 40 / x crosses 2 at x = 20, whatever the grid points around it."""
    curve = {x: 40.0 / x for x in (5, 13, 31, 80)}
    assert first_reach(curve, 2.0, log=True) == pytest.approx(20.0)
    assert first_reach(curve, 2.0) != pytest.approx(20.0)  # a straight line in x misses it
    # A value that is not positive (KID can be): straight in value, still log in x.
    assert first_reach({10: 1.0, 40: -1.0}, 0.0, log=True) == pytest.approx(20.0)


def test_the_robust_rule_reaches_within_the_targets_standard_error():
    """Baseline seeds end at 3 and 5 (mean 4, SE 1): reached at or below 5. Both curves are power laws
    per seed (baseline 4 c / x with c = 1.5, 2.5 at x = 10 ... 80, FDM twice as fast)."""
    base = seed_curves(
        {0: {x: 1.5 * 160 / x for x in (10, 20, 40, 80)}, 1: {x: 2.5 * 160 / x for x in (10, 20, 40, 80)}}
    )
    fdm = seed_curves(
        {0: {x: 1.5 * 80 / x for x in (10, 20, 40, 80)}, 1: {x: 2.5 * 80 / x for x in (10, 20, 40, 80)}}
    )
    robust, strict = speedup(base, fdm, ROBUST), speedup(base, fdm, STRICT)
    assert (robust.target, robust.tolerance, robust.threshold) == (
        4.0,
        pytest.approx(1.0),
        pytest.approx(5.0),
    )
    assert robust.baseline_reached == pytest.approx(64.0)  # 320 / x = 5
    assert robust.reached == pytest.approx(32.0) and robust.speedup == pytest.approx(2.0)
    assert (strict.tolerance, strict.baseline_reached, strict.reached) == (0.0, 80, pytest.approx(40.0))
    one = speedup(seed_curves({0: base.mean()}), fdm, ROBUST)  # one seed: no standard error
    assert one.tolerance == 0.0 and one.baseline_reached == 80


def test_a_miss_by_less_than_the_noise_does_not_flip_the_answer():
    """The long ablation's means (docs/results/ablation/long/fid_vs_mimg.csv, Heun NFE 19, 3 seeds):
    FDM-EDM's best is 10.210 at 120 kimg, EDM's final 10.202 (sd 1.379): strictly "not reached", by
    0.008; within EDM's standard error (0.796) both curves cross, EDM between 40 and 60 kimg, FDM-EDM
    between 100 and 120."""
    edm = {20: 22.102040, 40: 11.107834, 60: 10.111099, 80: 10.503208, 100: 11.114608, 120: 10.427861,
           140: 10.160973, 160: 10.202103}  # fmt: skip
    fdm = {20: 41.409412, 40: 15.665560, 60: 13.399527, 80: 11.821866, 100: 11.375258, 120: 10.210111,
           140: 10.767095, 160: 10.520697}  # fmt: skip
    strict = crossing(edm, fdm)
    assert strict.reached is None and strict.baseline_reached == pytest.approx(58.17, abs=0.01)
    se = 1.378773 / math.sqrt(3)
    robust = crossing(edm, fdm, se, log=True)
    threshold = 10.202103 + se

    def log_log(x0, y0, x1, y1):
        return x0 * (x1 / x0) ** (math.log(y0 / threshold) / math.log(y0 / y1))

    assert robust.baseline_reached == pytest.approx(log_log(40, 11.107834, 60, 10.111099))
    assert robust.reached == pytest.approx(log_log(100, 11.375258, 120, 10.210111))
    assert robust.speedup == pytest.approx(0.394, abs=0.001)
    # Moving FDM-EDM's 120 kimg point by the 0.008 of the miss barely moves the robust answer.
    nudged = crossing(edm, {**fdm, 120: 10.202103 - 1e-6}, se, log=True)
    assert nudged.speedup == pytest.approx(robust.speedup, abs=0.001)


# Bootstrap: paired. A resample draws training seeds with replacement and takes both curves of each drawn
# seed. With two seeds a resample is aa, bb (1/4 each) or ab (1/2): only three ratios can occur, and with
# 2000 resamples the 2.5% and 97.5% quantiles (inverted_cdf) are the smallest and the largest of them.

BASELINE = seed_curves({0: {10: 4.0, 20: 2.0}, 1: {10: 4.0, 20: 2.0}})  # target 2, reached at 20, no spread


def test_bootstrap_interval_ends_are_the_extreme_resampled_ratios():
    """Strict rule. a: 3 -> 1 crosses 2 at 15 (ratio 4/3); b: 3 -> 2 at 20 (1); ab: 3 -> 1.5 at 10 + 10/1.5 (1.2)."""
    fdm = seed_curves({0: {10: 3.0, 20: 1.0}, 1: {10: 3.0, 20: 2.0}})
    assert crossing(BASELINE.mean(), fdm.mean()).speedup == pytest.approx(1.2)
    boot = bootstrap_speedup(BASELINE, fdm, STRICT)
    assert (boot.ci_low, boot.ci_high, boot.not_reached, boot.pairs) == (
        pytest.approx(1.0), pytest.approx(4 / 3), 0.0, 2
    )  # fmt: skip
    median = bootstrap_speedup(BASELINE, fdm, STRICT, confidence=0.0)  # both ends at the median: ab
    assert (median.ci_low, median.ci_high) == (pytest.approx(1.2), pytest.approx(1.2))


def test_bootstrap_resamples_the_seeds_of_both_curves_together():
    """Seeds whose curves differ by a factor c = 1, 2, 4 on both sides, FDM twice as fast as the baseline
    on each seed: every paired resample gives exactly 2 (log-log crossings of power laws), so the interval
    is the point 2; drawn independently, the sides' resamples would scatter it."""
    grid = (10, 20, 40, 80)
    base = seed_curves({i: {x: c * 10 / x for x in grid} for i, c in enumerate((1.0, 2.0, 4.0))})
    fdm = seed_curves({i: {x: c * 5 / x for x in grid} for i, c in enumerate((1.0, 2.0, 4.0))})
    assert speedup(base, fdm).speedup == pytest.approx(2.0)
    boot = bootstrap_speedup(base, fdm)
    assert (boot.ci_low, boot.ci_high, boot.not_reached, boot.pairs) == (
        pytest.approx(2.0),
        pytest.approx(2.0),
        0.0,
        3,
    )
    # Seeds are matched by their number, not their position: a baseline seed 0 without an FDM run is left out
    # (paired by position, baseline seed 0 (c = 8) would meet FDM's seed 1 (c = 1)).
    curves = {i + 1: c for i, c in enumerate((1.0, 2.0, 4.0))}
    more = seed_curves(
        {0: {x: 80 / x for x in grid}} | {i: {x: c * 10 / x for x in grid} for i, c in curves.items()}
    )
    later = seed_curves({i: {x: c * 5 / x for x in grid} for i, c in curves.items()})
    boot = bootstrap_speedup(more, later)
    assert (boot.ci_low, boot.ci_high, boot.pairs) == (pytest.approx(2.0), pytest.approx(2.0), 3)


def test_bootstrap_recomputes_the_target_and_its_standard_error():
    """Baseline seeds c (4 -> 2) and d (4 -> 3), FDM 3 -> 1 on both; strict rule: target 2 (cc), 3 (dd) or
    2.5 (cd), each reached by the baseline at 20; FDM crosses it at 15, 10 (its first point) or 12.5."""
    baseline = seed_curves({0: {10: 4.0, 20: 2.0}, 1: {10: 4.0, 20: 3.0}})
    fdm = seed_curves({0: {10: 3.0, 20: 1.0}, 1: {10: 3.0, 20: 1.0}})
    boot = bootstrap_speedup(baseline, fdm, STRICT)
    assert (boot.ci_low, boot.ci_high, boot.not_reached) == (pytest.approx(20 / 15), pytest.approx(2.0), 0.0)
    # Robust: cc and dd have no spread (threshold 2, 3), cd has SE 0.5 (threshold 2.5 + 0.5 = 3). cc: the
    # baseline reaches 2 at 20, FDM (3 -> 1) at 10 * 2^(ln(3/2) / ln 3); dd: 20 against FDM's first point
    # (ratio 2); cd: the baseline's mean 4 -> 2.5 crosses 3 at 10 * 2^(ln(4/3) / ln(4/2.5)), FDM at 10.
    robust = bootstrap_speedup(baseline, fdm, ROBUST)
    cc = 20 / (10 * 2 ** (math.log(3 / 2) / math.log(3)))
    cd = 2 ** (math.log(4 / 3) / math.log(4 / 2.5))
    assert cd < cc < 2.0
    assert (robust.ci_low, robust.ci_high) == (pytest.approx(cd), pytest.approx(2.0))


def test_bootstrap_ranks_not_reached_below_every_ratio():
    """a reaches at 15 (4/3); b stays at 3 and never does; ab: 3 -> 2 at 20 (1). A quarter of the
    resamples (bb) never reach: the lower end falls among them, the upper end is a's ratio."""
    fdm = seed_curves({0: {10: 3.0, 20: 1.0}, 1: {10: 3.0, 20: 3.0}})
    boot = bootstrap_speedup(BASELINE, fdm, STRICT)
    assert boot.ci_low is None and boot.ci_high == pytest.approx(4 / 3)
    assert boot.not_reached == pytest.approx(1 / 4, abs=0.04)  # binomial: sd sqrt(3/16 / 2000) = 0.01
    never = bootstrap_speedup(BASELINE, seed_curves({0: {10: 3.0, 20: 2.5}, 1: {10: 3.0, 20: 3.0}}), STRICT)
    assert (never.ci_low, never.ci_high, never.not_reached) == (None, None, 1.0)


def test_bootstrap_is_a_pure_function_of_the_records_and_needs_two_seed_pairs():
    baseline = seed_curves({0: {1: 3.0, 2: 2.0}, 1: {1: 3.5, 2: 2.2}, 2: {1: 2.8, 2: 1.9}})
    fdm = seed_curves({0: {1: 2.5, 2: 1.5}, 1: {1: 2.1, 2: 1.4}})
    assert bootstrap_speedup(baseline, fdm) == bootstrap_speedup(baseline, fdm)
    assert bootstrap_speedup(baseline, fdm).pairs == 2  # seed 2 has no FDM run: not resampled
    assert bootstrap_speedup(seed_curves({0: {1: 1.0}}), seed_curves({0: {1: 1.0}})) is None  # n = 1 each
    assert bootstrap_speedup(seed_curves({0: {1: 3.0, 2: 2.0}}), fdm) is None  # one pair: nothing to resample
    assert bootstrap_speedup(seed_curves({5: {1: 3.0}, 6: {1: 3.0}}), fdm) is None  # no common seed


def test_curves_hold_missing_runs_as_nan():
    curves = Curves((10, 20), np.array([[1.0, math.nan], [3.0, 5.0]]), (0, 1))
    assert curves.mean() == {10: 2.0, 20: 5.0}
    assert curves.final_errors(np.array([[0, 1]]))[0] == 0.0  # one seed at 20: no standard error


def test_bootstrap_interval_ends_are_ratios_a_resample_can_produce():
    """A percentile interval's ends are order statistics of the resampled ratios (docs/report.md), never a
    value between two of them. Eight seed pairs whose baseline curves are all alike (target 2, reached at
    20 in every resample), so a paired resample of the FDM curves is a multiset of the eight, and the
    ratios that can occur are enumerated here from the definition, by hand: a resample whose mean at 20
    is m < 2 crosses 2 at 10 + 10 / (3 - m) (the strict rule interpolates linearly)."""
    finals = [1.13, 0.61, 1.87, 0.95, 1.42, 0.77, 1.66, 1.29]
    baseline = seed_curves({seed: {10: 3.0, 20: 2.0} for seed in range(len(finals))})
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
        boot = bootstrap_speedup(baseline, fdm, STRICT, confidence=confidence)
        assert boot.not_reached == 0.0
        for end in (boot.ci_low, boot.ci_high):
            assert np.min(np.abs(possible - end)) <= 1e-12 * end, (confidence, end)
    assert possible.min() < boot.ci_low < boot.ci_high < possible.max()
