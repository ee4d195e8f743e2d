"""Datasets: the prepare stage (`fdm.data.prepare`) and the in-memory reader (`ImageDataset`).

``ImageDataset`` is imported on first use so that ``fdm prepare`` does not load torch.
"""

from __future__ import annotations

__all__ = ["ImageDataset"]


def __getattr__(name: str):
    if name == "ImageDataset":
        from fdm.data.reader import ImageDataset

        return ImageDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
