"""``TrainConfig``: every setting of one training run, as one frozen dataclass.

Defaults are the EDM/FDM recipe (EDM arXiv 2206.00364, appendix F; the authors' train.py): Adam at 1e-3 with a 10-Mimg linear
ramp-up, EMA half-life 0.5 Mimg with ramp-up ratio 0.05, batch 512, fp32, DDPM++ with 128 channels
and 4 blocks per resolution. Durations and milestones are in kimg (thousands of images seen).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from fdm.errors import FdmError

PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")

# Settings that may change when a run is resumed: where and how it runs, how long, what it writes.
# ``batch_per_device`` may change too (another device count): results then agree only up to the
# floating-point reduction order.
RESUMABLE_CHANGES = frozenset(
    {
        "outdir",
        "duration_kimg",
        "snapshot_kimg",
        "tick_kimg",
        "state_every_kimg",
        "batch_per_device",
        "device",
        "deterministic",
        "threads",
        "tracking",
        "experiment",
        "progress",
        "gpus",
    }
)
# Settings that do not describe the model or its training; left out of the snapshots' config.
RUNTIME_ONLY = frozenset(
    {"outdir", "device", "deterministic", "threads", "tracking", "experiment", "progress", "gpus"}
)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run: dataset, formulation, network, optimisation, schedule, runtime."""

    dataset: str  # Path of the dataset zip (``fdm prepare``).
    outdir: str  # Run folder: snapshots/, state.pt, train.jsonl.
    # Formulation: vp, ve, edm, fdm_vp, fdm_ve, fdm_edm, with overrides (e.g. multiplier, warmup).
    formulation: str = "edm"
    formulation_options: dict = dataclasses.field(default_factory=dict)
    # Network (fdm.nets.build); ``network_options`` passes any further keyword.
    arch: str = "ddpmpp"
    model_channels: int = 128
    channel_mult: tuple[int, ...] = (2, 2, 2)
    num_blocks: int = 4
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.13
    label_dropout: float = 0.0
    network_options: dict = dataclasses.field(default_factory=dict)
    cond: bool = False  # Class conditioning on the dataset's labels.
    dataset_xflip: bool = False  # EDM's dataset x-flip: 2N items, the second half mirrored.
    augment_p: float = 0.0  # Probability of each augmentation; 0 switches augmentation (and its label) off.
    # Optimisation.
    batch: int = 512  # Total batch per optimizer step, over all devices and accumulation rounds.
    batch_per_device: int | None = None  # Micro-batch per device; None: batch / world size (no accumulation).
    lr: float = 1e-3
    lr_rampup_kimg: float = 10000.0
    ema_halflife_kimg: float = 500.0
    ema_rampup_ratio: float | None = 0.05
    # Schedule, in kimg.
    duration_kimg: float = 200000.0
    snapshot_kimg: tuple[float, ...] = ()  # Milestones; the end of training is always one.
    tick_kimg: float = 50.0  # Logging interval (train.jsonl, progress, tracking).
    state_every_kimg: float = 500.0  # Training state interval (also written at every milestone and the end).
    seed: int = 0
    # Runtime.
    device: str = "auto"
    precision: str = "fp32"
    loss_scaling: float = 1.0  # Static loss scale for fp16 (EDM's --ls).
    deterministic: bool = True
    tf32: bool = False
    threads: int | None = None  # CPU threads (torch.set_num_threads); None keeps PyTorch's choice.
    tracking: bool = False
    experiment: str = "fdm"  # MLflow experiment name when tracking.
    progress: bool = True
    gpus: int = (
        0  # GPUs of the job; with more than 1, `fdm train` starts itself under torchrun, one process each.
    )

    def __post_init__(self):
        for name in ("channel_mult", "attn_resolutions", "snapshot_kimg"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "snapshot_kimg", tuple(sorted(set(float(k) for k in self.snapshot_kimg))))
        self._check()

    def _check(self) -> None:
        def need(condition: bool, message: str) -> None:
            if not condition:
                raise FdmError(f"training config: {message}")

        need(self.batch > 0, f"batch must be positive, got {self.batch}")
        need(
            self.batch_per_device is None or 0 < self.batch_per_device <= self.batch,
            f"batch_per_device must be in [1, batch], got {self.batch_per_device}",
        )
        need(self.lr > 0, f"lr must be positive, got {self.lr}")
        need(self.lr_rampup_kimg >= 0, "lr_rampup_kimg must be >= 0")
        need(self.ema_halflife_kimg >= 0, "ema_halflife_kimg must be >= 0")
        need(
            self.ema_rampup_ratio is None or self.ema_rampup_ratio > 0, "ema_rampup_ratio must be > 0 or None"
        )
        need(0 < self.duration_kimg < math.inf, f"duration_kimg must be positive, got {self.duration_kimg}")
        need(
            all(0 < k <= self.duration_kimg for k in self.snapshot_kimg),
            "snapshot_kimg must lie in (0, duration]",
        )
        need(
            self.tick_kimg > 0 and self.state_every_kimg > 0,
            "tick_kimg and state_every_kimg must be positive",
        )
        need(0 <= self.augment_p <= 1, f"augment_p must be in [0, 1], got {self.augment_p}")
        need(
            0 <= self.dropout < 1 and 0 <= self.label_dropout < 1,
            "dropout and label_dropout must be in [0, 1)",
        )
        need(self.device in DEVICES, f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        need(
            self.precision in PRECISIONS,
            f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}",
        )
        need(self.loss_scaling > 0, "loss_scaling must be positive")
        need(self.threads is None or self.threads > 0, f"threads must be positive, got {self.threads}")
        need(self.gpus is None or self.gpus >= 0, f"gpus must be >= 0, got {self.gpus}")
        need(isinstance(self.seed, int) and not isinstance(self.seed, bool), "seed must be an integer")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict (e.g. JSON); an unknown key is a clear error naming the valid ones."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise FdmError(
                f"unknown training option(s) {', '.join(unknown)}; valid: {', '.join(sorted(fields))}"
            )
        missing = sorted(name for name in ("dataset", "outdir") if name not in values)
        if missing:
            raise FdmError(f"training config lacks {', '.join(missing)}")
        try:
            return cls(**values)
        except TypeError as err:
            raise FdmError(f"training config: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists); ``TrainConfig.from_dict`` inverts it."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)
        }

    def resume_mismatch(self, saved: dict[str, Any]) -> list[str]:
        """Names of settings that differ from a saved run's and may not change on resume."""
        current = self.to_dict()
        keys = (set(current) | set(saved)) - RESUMABLE_CHANGES
        return sorted(key for key in keys if current.get(key) != saved.get(key))

    def milestones_kimg(self) -> tuple[float, ...]:
        """Snapshot milestones including the end of training."""
        return tuple(sorted(set(self.snapshot_kimg) | {float(self.duration_kimg)}))
