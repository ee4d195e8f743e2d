"""`fdm import-checkpoint`: an EDM or FDM training pickle (file or URL) into a snapshot."""

from __future__ import annotations

import click


@click.command("import-checkpoint")
@click.option(
    "--source", required=True, help="The pickle: a file, or an http(s) URL (downloaded once, resumable)."
)
@click.option(
    "--dest", required=True, type=click.Path(dir_okay=False), help="Output snapshot; written atomically."
)
@click.option("--sha256", help="Expected SHA-256 of the pickle (64 hex digits), checked before it is read.")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    help="Where downloaded pickles are kept.  [default: $FDM_CACHE/checkpoints or ~/.cache/fdm/checkpoints]",
)
def import_checkpoint_command(source: str, dest: str, sha256: str | None, cache_dir: str | None) -> None:
    """Convert an EDM or FDM training pickle (its EMA network) into a snapshot, running none of its code.

    Reads the `ema` network of a network-snapshot-*.pkl written by NVlabs/edm (VPPrecond, VEPrecond,
    EDMPrecond) or sail-sg/FDM (FDM_VPPrecond, FDM_VEPrecond, FDM_EDMPrecond) with a SongUNet
    (DDPM++ / NCSN++), and writes a snapshot that `fdm sample` and `fdm evaluate` take like any other.

    \b
    Examples:
      fdm import-checkpoint --source network-snapshot-200000.pkl --dest runs/imported/fdm_edm.safetensors
      fdm import-checkpoint --source https://host/edm-cifar10-32x32-cond-vp.pkl --sha256 HEX --dest vp.safetensors
    """
    from fdm.checkpoints import import_checkpoint

    config = import_checkpoint(source, dest, sha256=sha256, cache_dir=cache_dir)
    network, imported = config["network"], config["imported"]
    click.echo(
        f"{dest}: {imported['class_name']} -> {config['formulation']['name']}, {network['arch']} "
        f"{network['img_resolution']}x{network['img_resolution']}x{network['img_channels']}, "
        f"label_dim {network['label_dim']} (sha256 {imported['sha256'][:12]})"
    )
    for note in imported["notes"]:
        click.echo(f"  note: {note}")
