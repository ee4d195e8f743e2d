"""`fdm import-checkpoint`: an EDM or FDM training pickle (file or URL) into a snapshot."""

from __future__ import annotations

import re
import tempfile
import traceback

import click

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(text: str) -> int:
    """Bytes of a size such as 2GiB, 500MB or 123456 (B, kB, MB, GB decimal; KiB, MiB, GiB binary)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if match is None or match[2].lower() not in _UNITS:
        raise click.BadParameter(f"{text!r} is not a size such as 2GiB, 500MB or 123456 (bytes)")
    return int(float(match[1]) * _UNITS[match[2].lower()])


def _size(ctx, param, value):
    return None if value is None else parse_size(value)


@click.command("import-checkpoint")
@click.option("--source", help="The pickle: a file, or an http(s) URL (downloaded once, resumable).")
@click.option("--dest", type=click.Path(dir_okay=False), help="Output snapshot; written atomically.")
@click.option(
    "--sha256",
    help="Expected SHA-256 of the pickle (64 hex digits), checked on the very bytes that are converted.",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    help="Where downloaded pickles are kept.  [default: $FDM_CACHE/checkpoints or ~/.cache/fdm/checkpoints]",
)
@click.option(
    "--max-size",
    callback=_size,
    help="The largest pickle read or downloaded, e.g. 4GiB (a CIFAR-10 DDPM++ pickle is 0.22 GiB); the "
    "conversion's memory and time limits grow with the file.  [default: 2GiB]",
)
@click.option(
    "--download-timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a download may take in all (connecting, headers, body).  [default: 3600]",
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
    source, dest, sha256, cache_dir, max_size, download_timeout, params_path, dataset, formulation, record
) -> None:
    """Convert an EDM or FDM training pickle (its EMA network) into a snapshot, running none of its code.

    Reads the `ema` network of a network-snapshot-*.pkl written by NVlabs/edm (VPPrecond, VEPrecond,
    EDMPrecond) or sail-sg/FDM (FDM_VPPrecond, FDM_VEPrecond, FDM_EDMPrecond) with a SongUNet
    (DDPM++ / NCSN++), and writes a snapshot that `fdm sample` and `fdm evaluate` take like any other.
    The file is read once, checked and converted in a child process with memory and time limits; a file
    that is not such a pickle is refused in one line and nothing is written (docs/checkpoints.md).

    \b
    Examples:
      fdm import-checkpoint --source network-snapshot-200000.pkl --dest runs/imported/fdm_edm.safetensors
      fdm import-checkpoint --source https://host/edm-cifar10-32x32-cond-vp.pkl --sha256 HEX --dest vp.safetensors
      fdm import-checkpoint --params config/paper.yaml --dataset cifar10 --formulation fdm_edm \\
          --record out/paper/runs/cifar10/fdm_edm/pretrained/trained.json
    """
    from fdm.errors import FdmError

    try:
        _import(
            source,
            dest,
            sha256,
            cache_dir,
            max_size,
            download_timeout,
            params_path,
            dataset,
            formulation,
            record,
        )
    except FdmError:
        raise
    except Exception as err:  # the command's boundary: a bug, reported as one, with its traceback kept
        with tempfile.NamedTemporaryFile(
            "w", prefix="fdm-import-checkpoint-", suffix=".log", delete=False
        ) as log:
            traceback.print_exc(file=log)
        raise FdmError(
            f"internal error: {type(err).__name__} while importing {source or dataset} (a bug in fdm, not a "
            f"refusal of the file); the traceback is in {log.name}"
        ) from None


def _import(
    source, dest, sha256, cache_dir, max_size, download_timeout, params_path, dataset, formulation, record
):
    from fdm.checkpoints import DEFAULT_DOWNLOAD_SECONDS, DEFAULT_MAX_BYTES, import_checkpoint
    from fdm.errors import FdmError

    limits = {
        "max_bytes": DEFAULT_MAX_BYTES if max_size is None else max_size,
        "download_seconds": DEFAULT_DOWNLOAD_SECONDS if download_timeout is None else download_timeout,
    }
    if params_path is not None:
        from fdm.jobs import import_released, open_profile

        if source or dest or sha256 or not (dataset and formulation and record):
            raise FdmError(
                "with --params give --dataset, --formulation and --record (the rest is the profile's)"
            )
        click.echo(import_released(open_profile(params_path), dataset, formulation, record, **limits))
        return
    if not source or not dest:
        raise FdmError("give --source and --dest (or --params with --dataset, --formulation and --record)")
    config = import_checkpoint(source, dest, sha256=sha256, cache_dir=cache_dir, **limits)
    network, imported = config["network"], config["imported"]
    click.echo(
        f"{dest}: {imported['class_name']} -> {config['formulation']['name']}, {network['arch']} "
        f"{network['img_resolution']}x{network['img_resolution']}x{network['img_channels']}, "
        f"label_dim {network['label_dim']} (sha256 {imported['sha256'][:12]})"
    )
    for note in imported["notes"]:
        click.echo(f"  note: {note}")
