"""`fdm import-checkpoint`: an EDM or FDM training pickle (file or URL) into a snapshot."""

from __future__ import annotations

import click


@click.command("import-checkpoint")
@click.option("--source", help="The pickle: a file, or an http(s) URL (downloaded once, resumable).")
@click.option("--dest", type=click.Path(dir_okay=False), help="Output snapshot; written atomically.")
@click.option("--sha256", help="Expected SHA-256 of the pickle (64 hex digits), checked before it is read.")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    help="Where downloaded pickles are kept.  [default: $FDM_CACHE/checkpoints or ~/.cache/fdm/checkpoints]",
)
@click.option(
    "--params",
    "params_path",
    type=click.Path(dir_okay=False),
    help="A profile: the pipeline's form, with --dataset, --formulation and --record (the rest is its "
    "pretrained entry).",
)
@click.option("--dataset", help="With --params: a dataset of the profile.")
@click.option("--formulation", help="With --params: the formulation of the profile's pretrained entry.")
@click.option("--record", type=click.Path(dir_okay=False), help="With --params: the JSON record to write.")
def import_checkpoint_command(
    source, dest, sha256, cache_dir, params_path, dataset, formulation, record
) -> None:
    """Convert an EDM or FDM training pickle (its EMA network) into a snapshot, running none of its code.

    Reads the `ema` network of a network-snapshot-*.pkl written by NVlabs/edm (VPPrecond, VEPrecond,
    EDMPrecond) or sail-sg/FDM (FDM_VPPrecond, FDM_VEPrecond, FDM_EDMPrecond) with a SongUNet
    (DDPM++ / NCSN++), and writes a snapshot that `fdm sample` and `fdm evaluate` take like any other.

    \b
    Examples:
      fdm import-checkpoint --source network-snapshot-200000.pkl --dest runs/imported/fdm_edm.safetensors
      fdm import-checkpoint --source https://host/edm-cifar10-32x32-cond-vp.pkl --sha256 HEX --dest vp.safetensors
      fdm import-checkpoint --params config/paper.yaml --dataset cifar10 --formulation fdm_edm \\
          --record out/paper/runs/cifar10/fdm_edm/pretrained/trained.json
    """
    from fdm.checkpoints import import_checkpoint
    from fdm.errors import FdmError

    if params_path is not None:
        from fdm.jobs import import_released, open_profile

        if source or dest or sha256 or not (dataset and formulation and record):
            raise FdmError(
                "with --params give --dataset, --formulation and --record (the rest is the profile's)"
            )
        click.echo(import_released(open_profile(params_path), dataset, formulation, record))
        return
    if not source or not dest:
        raise FdmError("give --source and --dest (or --params with --dataset, --formulation and --record)")
    config = import_checkpoint(source, dest, sha256=sha256, cache_dir=cache_dir)
    network, imported = config["network"], config["imported"]
    click.echo(
        f"{dest}: {imported['class_name']} -> {config['formulation']['name']}, {network['arch']} "
        f"{network['img_resolution']}x{network['img_resolution']}x{network['img_channels']}, "
        f"label_dim {network['label_dim']} (sha256 {imported['sha256'][:12]})"
    )
    for note in imported["notes"]:
        click.echo(f"  note: {note}")
