"""Reference statistics for FID and KID over a whole prepared dataset (docs/paper.md section 4).

As EDM's ``fid.py ref``, the statistics cover every training image, without flips: the feature mean and
the unbiased covariance in float64 (FID), plus the features themselves (KID needs samples, not moments).
The file is an ``.npz`` pipeline artifact under ``data/`` (never clean-fid's site-packages folder); it
records which extractor, mode and network file made it, and which dataset, so ``fdm fid`` can refuse
statistics that do not match the extractor it was asked to use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fdm.atomic import atomic_write
from fdm.errors import FdmError
from fdm.metrics.features import FeatureExtractor

_STRING_FIELDS = ("extractor", "mode", "extractor_sha256", "dataset", "dataset_sha256")


@dataclass(frozen=True)
class ReferenceStats:
    """Moments and features of a dataset in one extractor's feature space."""

    mu: np.ndarray  # float64 [D]
    sigma: np.ndarray  # float64 [D, D], unbiased
    features: np.ndarray  # float32 [N, D], for KID
    extractor: str
    mode: str
    extractor_sha256: str
    dataset: str  # file name of the prepared dataset
    dataset_sha256: str
    image_shape: tuple[int, int, int]  # (H, W, C) of the dataset's images

    @property
    def count(self) -> int:
        return int(self.features.shape[0])


def feature_moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of ``features`` [N, D] in float64, as EDM's fid.py and clean-fid."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise FdmError(f"need at least 2 feature vectors [N, D] for a covariance, got {list(features.shape)}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def embed(
    extractor: FeatureExtractor, images: np.ndarray, batch_size: int = 256, progress: bool = False
) -> np.ndarray:
    """Features of uint8 images ``[N, H, W, C]``, computed ``batch_size`` images at a time."""
    starts = range(0, len(images), batch_size)
    batches = tqdm(starts, desc=f"{extractor.name} features", unit="batch", disable=not progress)
    return np.concatenate([extractor(images[start : start + batch_size]) for start in batches])


def reference_stats(
    extractor: FeatureExtractor, images: np.ndarray, dataset: str, dataset_sha256: str, **embed_kwargs
) -> ReferenceStats:
    """Reference statistics of a whole dataset's images in ``extractor``'s feature space."""
    features = embed(extractor, images, **embed_kwargs)
    mu, sigma = feature_moments(features)
    return ReferenceStats(
        mu=mu,
        sigma=sigma,
        features=features,
        extractor=extractor.name,
        mode=extractor.mode,
        extractor_sha256=extractor.weights_sha256,
        dataset=dataset,
        dataset_sha256=dataset_sha256,
        image_shape=tuple(int(n) for n in images.shape[1:]),
    )


def dataset_stats(
    data: str | os.PathLike, dest: str | os.PathLike, extractor: FeatureExtractor, batch_size: int = 256
) -> ReferenceStats:
    """Reference statistics of every image of a prepared dataset zip (no flips, as EDM's ``fid.py ref``),
    written to ``dest``."""
    from fdm.data.reader import ImageDataset
    from fdm.digest import file_sha256

    dataset = ImageDataset(data, use_labels=False)
    stats = reference_stats(
        extractor,
        dataset.images.transpose(0, 2, 3, 1),
        dataset=dataset.path.name,
        dataset_sha256=file_sha256(data),
        batch_size=batch_size,
        progress=True,
    )
    save_stats(dest, stats)
    return stats


def save_stats(path: str | os.PathLike, stats: ReferenceStats) -> None:
    """Write ``stats`` to an ``.npz`` file atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(
                f,
                mu=stats.mu,
                sigma=stats.sigma,
                features=stats.features,
                count=np.int64(stats.count),
                image_shape=np.asarray(stats.image_shape, dtype=np.int64),
                **{key: np.str_(getattr(stats, key)) for key in _STRING_FIELDS},
            )

    atomic_write(path, write)


def load_stats(path: str | os.PathLike) -> ReferenceStats:
    """Read statistics written by ``save_stats``; anything else is a clear ``FdmError``."""
    path = Path(path)
    if not path.is_file():
        raise FdmError(f"reference statistics {path} do not exist: run `fdm ref-stats` first")
    try:
        with np.load(path, allow_pickle=False) as data:
            fields = {key: str(data[key]) for key in _STRING_FIELDS}
            arrays = {key: data[key] for key in ("mu", "sigma", "features")}
            image_shape = tuple(int(n) for n in data["image_shape"])
        stats = ReferenceStats(**arrays, **fields, image_shape=image_shape)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise FdmError(
            f"{path} is not a reference statistics file written by `fdm ref-stats` ({err})"
        ) from None
    dim = stats.mu.shape[0]
    if stats.sigma.shape != (dim, dim) or stats.features.ndim != 2 or stats.features.shape[1] != dim:
        raise FdmError(f"{path} holds inconsistent shapes: mu {stats.mu.shape}, sigma {stats.sigma.shape}")
    return stats


def check_matches(
    stats: ReferenceStats,
    extractor: FeatureExtractor,
    image_shape: tuple[int, ...] | None = None,
    source: str = "reference statistics",
) -> None:
    """Refuse statistics made with another extractor, mode or network file than ``extractor``, or from
    images of another shape (H, W, C) than ``image_shape`` when it is given."""
    if (stats.extractor, stats.mode) != (extractor.name, extractor.mode):
        raise FdmError(
            f"{source} were computed with {stats.extractor}/{stats.mode}, "
            f"not the requested {extractor.name}/{extractor.mode}"
        )
    if stats.extractor_sha256 != extractor.weights_sha256:
        raise FdmError(
            f"{source} were computed with a different {extractor.name} network file "
            f"(sha256 {stats.extractor_sha256[:12]}, now {extractor.weights_sha256[:12]}); recompute them"
        )
    if image_shape is not None and tuple(image_shape) != stats.image_shape:
        raise FdmError(
            f"images are {'x'.join(map(str, image_shape))} (HxWxC) but {source} were made from "
            f"{'x'.join(map(str, stats.image_shape))} images of {stats.dataset}"
        )
