"""`fdm train`: a thin command over ``fdm.training.train``.

Settings come from ``--config FILE`` (a JSON object of ``TrainConfig`` fields) and/or options;
an option given on the command line wins over the file. The options are made from the fields of
``TrainConfig`` and their help text (``fdm.training.config.setting``), so each setting is described
once. ``--gpus N`` starts the command again under torchrun with N processes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import click

from fdm.errors import FdmError
from fdm.training.config import TrainConfig


class CommaList(click.ParamType):
    """``1,2,2,2`` as a list of ``kind`` (int or float)."""

    name = "list"

    def __init__(self, kind):
        self.kind = kind

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        try:
            return [self.kind(v) for v in value.split(",") if v.strip()]
        except ValueError:
            self.fail(f"expected comma-separated numbers, got {value!r}", param, ctx)


def _option(field: dataclasses.Field, kind: str):
    """The `fdm train` option of one ``TrainConfig`` field, from its type and metadata (``setting``)."""
    meta = field.metadata
    name = meta["option"] or f"--{field.name.replace('_', '-')}"
    if kind == "bool":
        flag = name if "/" in name else f"{name}/--no-{name[2:]}"
        return click.option(flag, field.name, default=None, help=meta["help"])
    if kind.startswith("tuple["):
        click_type = CommaList(int if kind.startswith("tuple[int") else float)
    elif meta["choices"]:
        click_type = click.Choice(meta["choices"])
    elif field.name in ("dataset", "outdir"):
        click_type = click.Path(dir_okay=field.name == "outdir", file_okay=field.name == "dataset")
    else:
        click_type = {"int": int, "float": float, "str": str}[kind.removesuffix(" | None")]
    return click.option(name, field.name, type=click_type, default=None, help=meta["help"])


def _with_options(command):
    """Every ``TrainConfig`` field as an option of ``command`` (but the dict-valued ones)."""
    for field in reversed(dataclasses.fields(TrainConfig)):
        if field.metadata["option"] != "":  # "" marks a field with no option of its own
            command = _option(field, field.type)(command)
    return command


@click.command("train")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    help="JSON file of TrainConfig fields.",
)
@click.option(
    "--formulation-option",
    "formulation_option",
    multiple=True,
    metavar="KEY=VALUE",
    help="A hyperparameter of the formulation (a field of its class: multiplier=1.5, P_mean=-1.0); repeatable.",
)
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
def train_command(config_file, formulation_option, restart_on_change, record, **options) -> None:
    """Train one model (or resume it from OUTDIR/state.pt); snapshots go to OUTDIR/snapshots/."""
    from fdm.distributed import relaunch
    from fdm.training import train

    values: dict = {}
    if config_file:
        try:
            with open(config_file, encoding="utf-8") as f:
                values = json.load(f)
        except ValueError as err:
            raise FdmError(f"{config_file} is not valid JSON ({err})") from None
        if not isinstance(values, dict):
            raise FdmError(f"{config_file} must hold a JSON object of training options")
    values.update({field: value for field, value in options.items() if value is not None})
    if formulation_option:
        from fdm.diffusion import parse_options

        name = values.get("formulation", TrainConfig.formulation)
        try:
            overrides = parse_options(name, formulation_option)
        except ValueError as err:
            raise FdmError(f"--formulation-option: {err}") from None
        values["formulation_options"] = {**values.get("formulation_options", {}), **overrides}
    cfg = TrainConfig.from_dict(values)
    relaunch(cfg.gpus)
    outdir = train(cfg, restart_on_change=restart_on_change, record=record)
    if os.environ.get("RANK", "0") == "0":
        click.echo(f"trained {outdir}", err=True)


if __name__ == "__main__":  # torchrun -m fdm.training.cli ...: same error handling as `fdm train`.
    from fdm.cli import main

    main(["train", *sys.argv[1:]], prog_name="fdm")
