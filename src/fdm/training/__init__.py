"""Training: EDM's recipe for every formulation, with exact resume, determinism and data parallelism.

``train(TrainConfig(...))`` is the entry point (``fdm train`` is a thin command over it); see
docs/training.md.
"""

from __future__ import annotations

from fdm.training.config import TrainConfig
from fdm.training.loop import train
from fdm.training.run_folder import LOG_FILE, SNAPSHOT_DIR, STATE_FILE, snapshot_path

__all__ = ["LOG_FILE", "SNAPSHOT_DIR", "STATE_FILE", "TrainConfig", "snapshot_path", "train"]
