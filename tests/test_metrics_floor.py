"""The metric's floor (`fdm.metrics.floor`): FID of n real images against the reference statistics.

For features drawn from N(0, I_d) and a large reference set, the FID of n of them is, to first order,
d/n (the mean's error, E||mu_n||^2) plus Tr(E^2)/4 for the covariance error E = S_n - I, whose
expectation is d(d+1)/(n-1) (Wishart): d/n + d(d+1)/(4(n-1)).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fdm.metrics.floor import MAX_DISJOINT, REPLACEMENT_DRAWS, real_floor
from fdm.metrics.stats import ReferenceStats, feature_moments


def reference(count: int, dim: int, seed: int = 1) -> ReferenceStats:
    features = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    mu, sigma = feature_moments(features)
    return ReferenceStats(mu, sigma, features, "digitsnet", "native", "0" * 64, "d.zip", "0" * 64, (4, 4, 1))


@pytest.mark.parametrize("n", [400, 2000])
def test_floor_of_gaussian_features_is_the_small_sample_bias(n):
    dim = 4
    floor = real_floor(reference(100_000, dim), n)
    assert (floor.how, floor.draws, floor.n, floor.reference) == ("disjoint", MAX_DISJOINT, n, 100_000)
    expected = dim / n + dim * (dim + 1) / (4 * (n - 1))
    assert abs(floor.mean - expected) < 4 * floor.std / math.sqrt(floor.draws)
    assert floor.std > 0


def test_disjoint_when_the_reference_is_ten_times_larger_else_with_replacement():
    ref = reference(1797, 8)
    assert real_floor(ref, 179).how == "disjoint" and real_floor(ref, 179).draws == MAX_DISJOINT
    for n in (400, 2000):  # the digits' 400 and 2,000 samples: with replacement, repeats allowed
        floor = real_floor(ref, n)
        assert (floor.how, floor.draws) == ("with replacement", REPLACEMENT_DRAWS)
        # n independent draws from the reference's own distribution: the small-sample bias, within 4 SE
        expected = 8 / n + 8 * 9 / (4 * (n - 1))
        assert abs(floor.mean - expected) < 4 * floor.std / math.sqrt(floor.draws), n
    assert real_floor(ref, 400) == real_floor(ref, 400)  # a fixed generator: the report is reproducible
    kid = real_floor(ref, 400, kind="kid")
    assert kid.kind == "kid" and abs(kid.mean) < 0.05
    with pytest.raises(ValueError, match="fid or kid"):
        real_floor(ref, 400, kind="is")
    assert "400 real images" in real_floor(ref, 400).describe("fid_digitsnet")
