"""`fdm train`: a thin command over ``fdm.training.train``.

Settings come from ``--config FILE`` (a JSON object of ``TrainConfig`` fields) and/or options;
an option given on the command line wins over the file. Under ``torchrun`` run the module:
``torchrun --nproc_per_node=N -m fdm.training.cli --data ... --outdir ...``.
"""

from __future__ import annotations

import json
import os
import sys

import click

from fdm.errors import FdmError
from fdm.names import FORMULATIONS


def _float_list(value: str) -> list[float]:
    return [float(v) for v in value.split(",") if v.strip()]


def _int_list(value: str) -> list[int]:
    return [int(v) for v in value.split(",") if v.strip()]


# (option, TrainConfig field, click type, help). Lists are comma-separated.
_OPTIONS = [
    ("--data", "dataset", click.Path(dir_okay=False), "Dataset zip (from `fdm prepare`)."),
    ("--outdir", "outdir", click.Path(file_okay=False), "Run folder; an existing state.pt there is resumed."),
    (
        "--formulation",
        "formulation",
        click.Choice(FORMULATIONS),
        "Diffusion formulation.",
    ),
    ("--arch", "arch", click.Choice(["ddpmpp", "ncsnpp"]), "Network architecture."),
    ("--model-channels", "model_channels", int, "Base channel count."),
    ("--channel-mult", "channel_mult", str, "Channel multipliers per resolution, e.g. 1,2,2,2."),
    ("--num-blocks", "num_blocks", int, "Residual blocks per resolution."),
    ("--attn-resolutions", "attn_resolutions", str, "Resolutions with self-attention, e.g. 16."),
    ("--dropout", "dropout", float, "Dropout probability."),
    ("--label-dropout", "label_dropout", float, "Class-label dropout probability."),
    ("--augment", "augment_p", float, "Augmentation probability p (0: off)."),
    ("--batch", "batch", int, "Total batch per optimizer step."),
    ("--batch-per-device", "batch_per_device", int, "Micro-batch per device (gradient accumulation)."),
    ("--lr", "lr", float, "Learning rate."),
    ("--lr-rampup-kimg", "lr_rampup_kimg", float, "Learning-rate ramp-up, kimg."),
    ("--ema-halflife-kimg", "ema_halflife_kimg", float, "EMA half-life, kimg."),
    ("--ema-rampup-ratio", "ema_rampup_ratio", float, "EMA ramp-up ratio."),
    ("--duration-kimg", "duration_kimg", float, "Training length, kimg."),
    ("--snapshot-kimg", "snapshot_kimg", str, "Snapshot milestones, kimg, e.g. 50000,100000."),
    ("--tick-kimg", "tick_kimg", float, "Logging interval, kimg."),
    ("--state-every-kimg", "state_every_kimg", float, "Training-state interval, kimg."),
    ("--seed", "seed", int, "Training seed."),
    ("--device", "device", click.Choice(["auto", "cpu", "cuda"]), "Device."),
    ("--precision", "precision", click.Choice(["fp32", "bf16", "fp16"]), "Arithmetic precision."),
    ("--loss-scaling", "loss_scaling", float, "Static loss scale (fp16)."),
    ("--threads", "threads", int, "CPU threads (bitwise results on the CPU need the same count)."),
    ("--experiment", "experiment", str, "MLflow experiment name."),
    (
        "--gpus",
        "gpus",
        int,
        "GPUs of the job: 0 the CPU; more than 1 starts it under torchrun, one process each.",
    ),
]
_FLAGS = [
    ("--cond/--uncond", "cond", "Class conditioning on the dataset labels."),
    ("--xflip/--no-xflip", "dataset_xflip", "Double the dataset with mirrored images."),
    ("--deterministic/--nondeterministic", "deterministic", "Deterministic kernels."),
    ("--tf32/--no-tf32", "tf32", "Allow TF32 matmuls/convolutions on CUDA."),
    ("--tracking/--no-tracking", "tracking", "Log to MLflow."),
    ("--progress/--no-progress", "progress", "Show a progress bar."),
]
_LISTS = {"channel_mult": _int_list, "attn_resolutions": _int_list, "snapshot_kimg": _float_list}


def _with_options(command):
    for flag, field, help_text in reversed(_FLAGS):
        command = click.option(flag, field, default=None, help=help_text)(command)
    for option, field, kind, help_text in reversed(_OPTIONS):
        command = click.option(option, field, type=kind, default=None, help=help_text)(command)
    return command


@click.command("train")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    help="JSON file of TrainConfig fields.",
)
@click.option("--fdm-multiplier", type=float, default=None, help="FDM momentum multiplier m.")
@click.option("--fdm-warmup", type=int, default=None, help="FDM loss-weight cap warmup, optimizer steps.")
@click.option(
    "--restart-on-change",
    is_flag=True,
    help="Start over (deleting the old snapshots) where OUTDIR holds a run with other settings.",
)
@click.option(
    "--record",
    type=click.Path(dir_okay=False),
    default=None,
    help="JSON file of the snapshots' SHA-256 digests, written when training is complete.",
)
@_with_options
def train_command(config_file, fdm_multiplier, fdm_warmup, restart_on_change, record, **options) -> None:
    """Train one model (or resume it from OUTDIR/state.pt); snapshots go to OUTDIR/snapshots/."""
    from fdm.distributed import relaunch
    from fdm.training import TrainConfig, train

    values: dict = {}
    if config_file:
        try:
            with open(config_file, encoding="utf-8") as f:
                values = json.load(f)
        except ValueError as err:
            raise FdmError(f"{config_file} is not valid JSON ({err})") from None
        if not isinstance(values, dict):
            raise FdmError(f"{config_file} must hold a JSON object of training options")
    for field, value in options.items():
        if value is None:
            continue
        try:
            values[field] = _LISTS[field](value) if field in _LISTS else value
        except ValueError:
            raise FdmError(
                f"--{field.replace('_', '-')}: expected comma-separated numbers, got {value!r}"
            ) from None
    overrides = {"multiplier": fdm_multiplier, "warmup": fdm_warmup}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if overrides:
        values["formulation_options"] = {**values.get("formulation_options", {}), **overrides}
    cfg = TrainConfig.from_dict(values)
    relaunch(cfg.gpus)
    outdir = train(cfg, restart_on_change=restart_on_change, record=record)
    if os.environ.get("RANK", "0") == "0":
        click.echo(f"trained {outdir}", err=True)


if __name__ == "__main__":  # torchrun -m fdm.training.cli ...: same error handling as `fdm train`.
    from fdm.cli import main

    main(["train", *sys.argv[1:]], prog_name="fdm")
