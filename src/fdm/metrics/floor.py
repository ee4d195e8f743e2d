"""The metric's floor: FID (or KID) of n real images against the reference statistics.

A generator that sampled the data distribution exactly would still score above zero with n samples:
the n-sample estimate of the mean and covariance is noisy, and FID is biased upwards by it. The floor
measures that bias in each feature space at the sample count the profile evaluates with, by scoring
real images, subsets of the reference set itself, as if they were samples:

- **disjoint** draws when the reference set is at least ``DISJOINT_FACTOR`` times larger than n:
  ``min(N // n, MAX_DISJOINT)`` subsets of one random permutation. Drawn without replacement from a
  finite set, a subset's mean varies less than that of n independent images, by the factor 1 - n/N
  (the finite-population correction): at N >= 10 n the floor is at most about 10% low for it;
- **with replacement** otherwise (400 or 2,000 samples against the 1,797 digits, 50,000 against
  CIFAR-10's 50,000): ``REPLACEMENT_DRAWS`` draws of n indices, repeats allowed, i.e. n independent
  draws from the reference set's own distribution, whose FID against it has exactly the small-sample
  bias of n independent samples (KID's unbiased estimator is pulled up a little by the repeats).

Either way the images are the reference set's own (the generated samples are not), which puts the
floor below that of n held-out real images; no held-out images exist for the digits. The scores are
`fdm.metrics.scores`'s, as for every evaluation; the draws come from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fdm.metrics.scores import fid, kid
from fdm.metrics.stats import ReferenceStats

DISJOINT_FACTOR = 10
MAX_DISJOINT = 10
REPLACEMENT_DRAWS = 5
SEED = 0


@dataclasses.dataclass(frozen=True)
class Floor:
    """The score of n real images against the reference: mean and standard deviation over ``draws``."""

    kind: str  # fid | kid
    n: int  # images per draw
    reference: int  # N, the reference set's size
    draws: int
    how: str  # "disjoint" | "with replacement"
    mean: float
    std: float | None  # None for a single draw

    def describe(self, metric: str) -> str:
        spread = "" if self.std is None else f", sd {self.std:.3g}"
        if self.how == "disjoint":
            source = f"{self.draws} disjoint draws of {self.n:,} from the {self.reference:,} reference images"
        else:
            source = (
                f"{self.draws} draws of {self.n:,} {self.how} from the {self.reference:,} reference images"
            )
        return f"{metric} of {self.n:,} real images against the reference statistics: {self.mean:.3g} ({source}{spread})"


def real_floor(ref: ReferenceStats, n: int, kind: str = "fid", seed: int = SEED) -> Floor:
    """The ``kind`` score of ``n`` real images (subsets of ``ref``'s features) against ``ref``."""
    if kind not in ("fid", "kid"):
        raise ValueError(f"kind must be fid or kid, got {kind!r}")
    features, total = ref.features, ref.count
    rng = np.random.default_rng(seed)
    if total >= DISJOINT_FACTOR * n:
        order = rng.permutation(total)
        subsets = [order[i * n : (i + 1) * n] for i in range(min(total // n, MAX_DISJOINT))]
        how = "disjoint"
    else:
        subsets = list(rng.integers(0, total, size=(REPLACEMENT_DRAWS, n)))
        how = "with replacement"
    scores = [
        fid(features[idx], ref.mu, ref.sigma) if kind == "fid" else kid(features[idx], features)
        for idx in subsets
    ]
    std = float(np.std(scores, ddof=1)) if len(scores) > 1 else None
    return Floor(kind, n, total, len(scores), how, float(np.mean(scores)), std)
