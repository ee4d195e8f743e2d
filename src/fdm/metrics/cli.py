"""`fdm fetch-inception`, `fdm featnet`, `fdm ref-stats` and `fdm fid`: thin commands over fdm.metrics."""

from __future__ import annotations

import click

from fdm.errors import FdmError
from fdm.metrics.features import DIGITSNET_MODE, EXTRACTORS, INCEPTION_MODES, INCEPTION_URL


def extractor_options(func):
    """The options that choose a feature extractor, shared by ref-stats, fid and evaluate."""
    options = [
        click.option("--extractor", type=click.Choice(EXTRACTORS), default="inception", show_default=True),
        click.option(
            "--mode",
            type=click.Choice((*INCEPTION_MODES, DIGITSNET_MODE)),
            help="Inception: clean or legacy_tensorflow (comparable with the paper) [default: legacy_tensorflow]; "
            "digitsnet: native.",
        ),
        click.option(
            "--featnet", type=click.Path(dir_okay=False), help="Digits feature network (fdm featnet)."
        ),
        click.option(
            "--inception-dir",
            type=click.Path(file_okay=False),
            help="Folder of inception-2015-12-05.pt [default: $FDM_INCEPTION_DIR or ~/.cache/fdm].",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def open_extractor(extractor: str, mode: str | None, device, featnet: str | None, inception_dir: str | None):
    """Build the extractor the options describe (Inception's mode defaults to legacy_tensorflow)."""
    from fdm.metrics.features import build_extractor

    if extractor == "inception" and mode is None:
        mode = "legacy_tensorflow"
    return build_extractor(extractor, mode, device, featnet=featnet, inception_folder=inception_dir)


@click.command("fetch-inception")
@click.option(
    "--dir", "folder", type=click.Path(file_okay=False), help="[default: $FDM_INCEPTION_DIR or ~/.cache/fdm]"
)
@click.option("--url", default=INCEPTION_URL, show_default=True)
def fetch_inception_command(folder, url):
    """Download clean-fid's TorchScript Inception (the only stage that downloads), size-checked."""
    from fdm.metrics.features import fetch_inception

    click.echo(f"Inception weights: {fetch_inception(folder, url)}")


@click.command("featnet")
@click.option("--data", required=True, type=click.Path(dir_okay=False), help="Prepared digits zip.")
@click.option(
    "--dest", required=True, type=click.Path(dir_okay=False), help="TorchScript file to write (.pt)."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=12, show_default=True)
@click.option("--min-accuracy", type=click.FloatRange(0, 1), default=0.97, show_default=True)
def featnet_command(data, dest, seed, epochs, min_accuracy):
    """Train the digits feature network on the CPU; write it only if its held-out accuracy is high enough.

    \b
    fdm featnet --data data/digits.zip --dest data/digitsnet.pt    # also writes data/digitsnet.json
    """
    from fdm.data.reader import ImageDataset
    from fdm.digest import file_sha256
    from fdm.metrics.featnet import save_if_accurate

    dataset = ImageDataset(data)
    if dataset.labels is None:
        raise FdmError(f"{data} has no labels; the feature network is a classifier and needs them")
    about = {"dataset": str(data), "dataset_sha256": file_sha256(data)}
    images = dataset.images.transpose(0, 2, 3, 1)
    click.echo(save_if_accurate(dest, images, dataset.labels, about, seed, epochs, min_accuracy))


@click.command("ref-stats")
@click.option("--data", type=click.Path(dir_okay=False), help="Prepared dataset zip.")
@click.option(
    "--dest",
    required=True,
    type=click.Path(),
    help="Statistics file to write (.npz); with --params, the folder of one file per mode.",
)
@extractor_options
@click.option("--batch", "batch_size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--device", help="cpu, cuda ... [default: cuda if available, else cpu]")
@click.option(
    "--params",
    "params_path",
    type=click.Path(dir_okay=False),
    help="A profile: the pipeline's form, with --dataset and --extractor (data, network and modes from it).",
)
@click.option("--dataset", help="With --params: a dataset of the profile.")
def ref_stats_command(
    data, dest, extractor, mode, featnet, inception_dir, batch_size, device, params_path, dataset
):
    """Reference statistics of a whole prepared dataset (no flips), for FID and KID.

    \b
    fdm ref-stats --data data/digits.zip --extractor digitsnet --featnet data/networks/digitsnet/digitsnet.pt \\
        --dest digits.digitsnet.npz
    fdm ref-stats --data data/cifar10.zip --mode legacy_tensorflow --dest cifar10.legacy_tensorflow.npz
    fdm ref-stats --params params.yaml --dataset digits --extractor digitsnet --dest out/smoke/data/stats/digits/digitsnet
    """
    from fdm.distributed import resolve_device

    if params_path is not None:
        from fdm.jobs import open_profile, reference_stats

        if data or mode or featnet or inception_dir or not dataset:
            raise FdmError(
                "with --params give --dataset, --extractor and --dest only (the rest is the profile's)"
            )
        for path in reference_stats(
            open_profile(params_path), dataset, extractor, dest, resolve_device(device)
        ):
            click.echo(f"wrote {path}")
        return
    from fdm.metrics.stats import dataset_stats

    if data is None or dataset is not None:
        raise FdmError("give --data (or --params with --dataset)")
    feature_extractor = open_extractor(extractor, mode, resolve_device(device), featnet, inception_dir)
    stats = dataset_stats(data, dest, feature_extractor, batch_size)
    click.echo(
        f"wrote {feature_extractor.name}/{feature_extractor.mode} statistics of {stats.count} images to {dest}"
    )


@click.command("fid")
@click.option("--samples", required=True, type=click.Path(dir_okay=False), help="Sample file (fdm sample).")
@click.option("--stats", required=True, type=click.Path(dir_okay=False), help="Reference statistics (.npz).")
@click.option("--dest", required=True, type=click.Path(dir_okay=False), help="metrics.json to write.")
@extractor_options
@click.option("--batch", "batch_size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--device", help="cpu, cuda ... [default: cuda if available, else cpu]")
def fid_command(samples, stats, dest, extractor, mode, featnet, inception_dir, batch_size, device):
    """FID and KID of a sample file against reference statistics, into metrics.json.

    \b
    fdm fid --samples samples.npz --extractor digitsnet --featnet data/digitsnet.pt \\
        --stats data/digits.digitsnet.stats.npz --dest metrics.json
    """
    from fdm.distributed import resolve_device
    from fdm.metrics.scores import score, write_metrics
    from fdm.metrics.stats import check_matches, embed, load_stats
    from fdm.samples import load_samples

    ref = load_stats(stats)
    feature_extractor = open_extractor(extractor, mode, resolve_device(device), featnet, inception_dir)
    generated = load_samples(samples)
    check_matches(ref, feature_extractor, generated.images.shape[1:])
    features = embed(feature_extractor, generated.images, batch_size=batch_size, progress=True)
    values = score(features, ref)
    write_metrics(dest, values, [ref], len(generated.images), samples=str(samples), **generated.meta)
    click.echo(" ".join(f"{name}={value:.6g}" for name, value in values.items()))
