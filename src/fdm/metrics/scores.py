"""FID and KID of generated features against reference statistics, with clean-fid's distances.

FID = ||mu - mu_r||^2 + Tr(Sigma + Sigma_r - 2 (Sigma Sigma_r)^(1/2)) (Heusel et al. 2017), through
``cleanfid.fid.frechet_distance``; KID is the unbiased squared MMD with the cubic polynomial kernel
(Binkowski et al. 2018), averaged over random subsets, through ``cleanfid.fid.kernel_distance``.
Metric names carry the extractor and, for Inception, the mode: ``fid_inception_legacy_tensorflow``,
``kid_inception_clean``, ``fid_digitsnet``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
from cleanfid.fid import frechet_distance, kernel_distance

from fdm.atomic import atomic_write_text
from fdm.errors import FdmError
from fdm.metrics.stats import ReferenceStats, feature_moments
from fdm.names import measure_name, metric_name


def fid(features: np.ndarray, mu_ref: np.ndarray, sigma_ref: np.ndarray) -> float:
    """Frechet distance between the Gaussian fitted to ``features`` and the reference one."""
    mu, sigma = feature_moments(features)
    if mu.shape != mu_ref.shape:
        raise FdmError(f"feature dimension {mu.shape[0]} does not match the reference's {mu_ref.shape[0]}")
    return float(frechet_distance(mu, sigma, mu_ref, sigma_ref))


def kid(features: np.ndarray, features_ref: np.ndarray, seed: int = 0) -> float:
    """Kernel inception distance between two feature sets, with subsets drawn from ``seed``.

    clean-fid draws its subsets from numpy's global generator; it is seeded here, and restored afterwards,
    so that the same features always give the same KID.
    """
    if min(len(features), len(features_ref)) < 2:
        raise FdmError("KID needs at least 2 images in each set")
    state = np.random.get_state()  # noqa: NPY002 (clean-fid draws from the legacy global generator)
    np.random.seed(seed)  # noqa: NPY002
    try:
        return kernel_distance(np.asarray(features, np.float64), np.asarray(features_ref, np.float64))
    finally:
        np.random.set_state(state)  # noqa: NPY002


def score(features: np.ndarray, ref: ReferenceStats) -> dict[str, float]:
    """FID and KID of ``features`` against ``ref``, keyed by metric name."""
    return {
        metric_name("fid", ref.extractor, ref.mode): fid(features, ref.mu, ref.sigma),
        metric_name("kid", ref.extractor, ref.mode): kid(features, ref.features),
    }


def scored_with(ref: ReferenceStats) -> dict:
    """What the metrics of one feature space were measured with: extractor, mode, network, reference."""
    return {
        "extractor": ref.extractor,
        "mode": ref.mode,
        "extractor_sha256": ref.extractor_sha256,
        "reference": {"dataset": ref.dataset, "dataset_sha256": ref.dataset_sha256, "count": ref.count},
    }


def metrics_record(
    values: dict[str, float], refs: Sequence[ReferenceStats], num_samples: int, **provenance
) -> dict:
    """The record of ``metrics.json``: the values at the top level, by metric name (as ``fdm report`` and
    ``dvc metrics`` read them), then what they were measured with and ``provenance`` (sampler, num_steps,
    nfe, seeds, snapshot, snapshot_sha256 ...).

    One feature space (one statistics file in ``refs``): its extractor, mode, extractor_sha256 and reference
    at the top level. Several (the paper's two Inception modes): the same four per space under
    ``scoring.<space>`` (``scoring.inception_clean.mode``).
    """
    if len(refs) == 1:
        measured = scored_with(refs[0])
    else:
        measured = {"scoring": {measure_name(ref.extractor, ref.mode): scored_with(ref) for ref in refs}}
    return {**values, "num_samples": int(num_samples), **measured, **provenance}


def write_metrics(
    path: str | os.PathLike,
    values: dict[str, float],
    refs: Sequence[ReferenceStats],
    num_samples: int,
    **provenance,
) -> dict:
    """Write ``metrics.json`` (``metrics_record``) atomically and return its record."""
    record = metrics_record(values, refs, num_samples, **provenance)
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record
