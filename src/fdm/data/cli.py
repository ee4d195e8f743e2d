"""`fdm prepare <dataset>`: write data/<dataset>.zip in EDM's dataset format (docs/datasets.md)."""

from __future__ import annotations

import click

from fdm.data import prepare as stage

_PATH = click.Path(dir_okay=False)


def _dest_option(default: str | None):
    return click.option(
        "--dest",
        default=default,
        required=default is None,
        type=_PATH,
        show_default=True,
        help="Output zip; written atomically.",
    )


def _folder_options(resolution_default: str, labels_default: str):
    """Options shared by `folder` and the FFHQ/AFHQv2 presets."""

    def decorate(command):
        options = [
            click.option("--source", type=click.Path(), help="Folder or zip of images, scanned recursively."),
            click.option(
                "--resolution",
                type=click.IntRange(min=1),
                help=f"Resize to RESxRES with Lanczos.  [default: {resolution_default}]",
                metavar="RES",
            ),
            click.option(
                "--crop",
                type=click.Choice(["none", "center"]),
                help="Non-square images: error (none) or centre-crop to a square.  [default: none]",
            ),
            click.option(
                "--labels/--no-labels",
                default=None,
                help=f"Label images by the name of their folder.  [default: {labels_default}]",
            ),
            click.option(
                "--channels",
                type=click.Choice(["1", "3"]),
                default="3",
                show_default=True,
                help="Store grayscale (1) or RGB (3).",
            ),
            click.option(
                "--workers",
                type=click.IntRange(min=1),
                default=1,
                show_default=True,
                help="Processes decoding and resizing images; the output is the same for any number.",
            ),
        ]
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


@click.group("prepare")
def prepare() -> None:
    """Convert a dataset to a zip of PNGs plus dataset.json (EDM's format).

    \b
    Examples:
      fdm prepare digits                       # embedded, no network
      fdm prepare cifar10                      # downloads cifar-10-python.tar.gz
      fdm prepare cifar10 --source ~/cifar-10-python.tar.gz
      fdm prepare ffhq --source ~/ffhq/images1024x1024
      fdm prepare afhqv2 --source ~/afhq-v2-dataset
      fdm prepare folder --source pics/ --dest data/pics.zip --resolution 64 --crop center
    """


@prepare.command("digits")
@_dest_option("data/digits.zip")
def digits(dest: str) -> None:
    """scikit-learn's 1,797 handwritten digits at 16x16, grayscale, labels 0-9."""
    click.echo(stage.prepare_digits(dest).line())


@prepare.command("cifar10")
@_dest_option("data/cifar10.zip")
@click.option("--source", type=click.Path(), help="An already downloaded cifar-10-python.tar.gz.")
@click.option(
    "--download-dir",
    type=click.Path(file_okay=False),
    help="Where the archive is looked for and downloaded to.  [default: DEST's folder/downloads]",
)
@click.option("--url", default=stage.cifar10.URL, hidden=True)
@click.option("--md5", default=stage.cifar10.MD5, hidden=True)
def cifar10(dest: str, source: str | None, download_dir: str | None, url: str, md5: str) -> None:
    """CIFAR-10's 50,000 training images, 32x32 RGB, labels 0-9 (MD5-checked download)."""
    click.echo(stage.prepare_cifar10(dest, source=source, download_dir=download_dir, url=url, md5=md5).line())


def _preset(name: str, description: str):
    @prepare.command(name, help=description)
    @_dest_option(f"data/{name}.zip")
    @_folder_options("64", "on" if stage.PRESETS[name]["labels"] else "off")
    def command(dest, source, resolution, crop, labels, channels, workers) -> None:
        summary = stage.prepare_preset(
            name,
            dest,
            source,
            resolution=resolution,
            crop=crop,
            labels=labels,
            channels=int(channels),
            workers=workers,
        )
        click.echo(summary.line())

    return command


ffhq = _preset("ffhq", "FFHQ at 64x64 (Lanczos), unconditional, from the 1024x1024 PNGs.")
afhqv2 = _preset("afhqv2", "AFHQv2 at 64x64 (Lanczos), labels cat/dog/wild, from the 512x512 images.")


@prepare.command("folder")
@_dest_option(None)
@_folder_options("keep the source size", "off")
def folder(dest, source, resolution, crop, labels, channels, workers) -> None:
    """Any folder or zip of images: PNG, JPEG, ..., grayscale or colour."""
    if source is None:
        raise click.UsageError("Missing option '--source'.")
    summary = stage.prepare_folder(
        dest,
        source,
        resolution=resolution,
        crop=crop or "none",
        labels=bool(labels),
        channels=int(channels),
        workers=workers,
    )
    click.echo(summary.line())
