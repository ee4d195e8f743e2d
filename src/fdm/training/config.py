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
from fdm.names import FORMULATIONS

PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
ARCHS = ("ddpmpp", "ncsnpp")

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


def setting(help: str, default=dataclasses.MISSING, *, option: str | None = None, choices=None, factory=None):
    """A ``TrainConfig`` field with its command-line help, the one place it is written.

    ``option``: the `fdm train` option when it is not ``--<field-name>`` (a flag pair for booleans);
    ``choices``: the accepted values. ``fdm.training.cli`` builds every option from these.
    """
    metadata = {"help": help, "option": option, "choices": choices}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run: dataset, formulation, network, optimisation, schedule, runtime."""

    dataset: str = setting("Dataset zip (from `fdm prepare`).", option="--data")
    outdir: str = setting(
        "Run folder: snapshots/, state.pt, train.jsonl; an existing state.pt there is resumed."
    )
    # Formulation and its options (fields of its class, e.g. FDM's multiplier: --formulation-option).
    formulation: str = setting("Diffusion formulation.", "edm", choices=FORMULATIONS)
    formulation_options: dict = setting("Options of the formulation.", factory=dict, option="")
    # Network (fdm.nets.build); ``network_options`` passes any further keyword.
    arch: str = setting("Network architecture.", "ddpmpp", choices=ARCHS)
    model_channels: int = setting("Base channel count.", 128)
    channel_mult: tuple[int, ...] = setting("Channel multipliers per resolution, e.g. 1,2,2,2.", (2, 2, 2))
    num_blocks: int = setting("Residual blocks per resolution.", 4)
    attn_resolutions: tuple[int, ...] = setting("Resolutions with self-attention, e.g. 16.", (16,))
    dropout: float = setting("Dropout probability.", 0.13)
    label_dropout: float = setting("Class-label dropout probability.", 0.0)
    network_options: dict = setting("Further keywords of fdm.nets.build.", factory=dict, option="")
    cond: bool = setting("Class conditioning on the dataset's labels.", False, option="--cond/--uncond")
    dataset_xflip: bool = setting(
        "EDM's dataset x-flip: 2N items, the second half mirrored.", False, option="--xflip/--no-xflip"
    )
    augment_p: float = setting(
        "Probability of each augmentation; 0 switches augmentation (and its label) off.",
        0.0,
        option="--augment",
    )
    # Optimisation.
    batch: int = setting("Total batch per optimizer step, over all devices and accumulation rounds.", 512)
    batch_per_device: int | None = setting(
        "Micro-batch per device (gradient accumulation); unset: batch / processes.", None
    )
    lr: float = setting("Learning rate.", 1e-3)
    lr_rampup_kimg: float = setting("Learning-rate ramp-up, kimg.", 10000.0)
    ema_halflife_kimg: float = setting("EMA half-life, kimg.", 500.0)
    ema_rampup_ratio: float | None = setting("EMA ramp-up ratio.", 0.05)
    # Schedule, in kimg.
    duration_kimg: float = setting("Training length, kimg.", 200000.0)
    snapshot_kimg: tuple[float, ...] = setting(
        "Snapshot milestones, kimg, e.g. 50000,100000; the end of training is always one.", ()
    )
    tick_kimg: float = setting("Logging interval (train.jsonl, progress, tracking), kimg.", 50.0)
    state_every_kimg: float = setting(
        "Training-state interval, kimg (also written at every milestone and the end).", 500.0
    )
    seed: int = setting("Training seed.", 0)
    # Runtime.
    device: str = setting("Device.", "auto", choices=DEVICES)
    precision: str = setting("Arithmetic precision.", "fp32", choices=PRECISIONS)
    loss_scaling: float = setting("Static loss scale for fp16 (EDM's --ls).", 1.0)
    deterministic: bool = setting("Deterministic kernels.", True, option="--deterministic/--nondeterministic")
    tf32: bool = setting("Allow TF32 matmuls and convolutions on CUDA.", False)
    threads: int | None = setting("CPU threads (bitwise results on the CPU need the same count).", None)
    tracking: bool = setting("Log to MLflow as training goes.", False)
    experiment: str = setting("MLflow experiment name when tracking.", "fdm")
    progress: bool = setting("Show a progress bar.", True)
    gpus: int | None = setting(
        "GPUs of the job: 0 the CPU; more than 1 starts it under torchrun, one process each.", None
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

    def model_settings(self) -> dict[str, Any]:
        """The settings that describe the model and its training (not where or how it ran, nor the dataset
        file's path): what a snapshot's metadata, the run's record and its MLflow params hold."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_ONLY and k != "dataset"}

    def resume_mismatch(self, saved: dict[str, Any]) -> list[str]:
        """Names of settings that differ from a saved run's and may not change on resume."""
        current = self.to_dict()
        keys = (set(current) | set(saved)) - RESUMABLE_CHANGES
        return sorted(key for key in keys if current.get(key) != saved.get(key))

    def milestones_kimg(self) -> tuple[float, ...]:
        """Snapshot milestones including the end of training."""
        return tuple(sorted(set(self.snapshot_kimg) | {float(self.duration_kimg)}))
