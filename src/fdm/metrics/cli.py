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
    from fdm.metrics.featnet import info_path, save_featnet, train_featnet

    dataset = ImageDataset(data)
    if dataset.labels is None:
        raise FdmError(f"{data} has no labels; the feature network is a classifier and needs them")
    net, info = train_featnet(dataset.images.transpose(0, 2, 3, 1), dataset.labels, seed=seed, epochs=epochs)
    accuracy = info["held_out_accuracy"]
    if accuracy < min_accuracy:
        raise FdmError(
            f"held-out accuracy {accuracy:.4f} is below --min-accuracy {min_accuracy}; nothing written"
        )
    save_featnet(dest, net, {**info, "dataset": str(data), "dataset_sha256": file_sha256(data)})
    click.echo(
        f"held-out accuracy {accuracy:.4f} ({info['held_out_count']} images); wrote {dest} and {info_path(dest)}"
    )


@click.command("ref-stats")
@click.option("--data", required=True, type=click.Path(dir_okay=False), help="Prepared dataset zip.")
@click.option(
    "--dest", required=True, type=click.Path(dir_okay=False), help="Statistics file to write (.npz)."
)
@extractor_options
@click.option("--batch", "batch_size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--device", help="cpu, cuda ... [default: cuda if available, else cpu]")
def ref_stats_command(data, dest, extractor, mode, featnet, inception_dir, batch_size, device):
    """Reference statistics of a whole prepared dataset (no flips), for FID and KID.

    \b
    fdm ref-stats --data data/digits.zip --extractor digitsnet --featnet data/digitsnet.pt \\
        --dest data/digits.digitsnet.stats.npz
    fdm ref-stats --data data/cifar10.zip --mode legacy_tensorflow \\
        --dest data/cifar10.inception_legacy_tensorflow.stats.npz
    """
    from fdm.data.reader import ImageDataset
    from fdm.digest import file_sha256
    from fdm.generate import resolve_device
    from fdm.metrics.stats import reference_stats, save_stats

    feature_extractor = open_extractor(extractor, mode, resolve_device(device), featnet, inception_dir)
    dataset = ImageDataset(data, use_labels=False)
    stats = reference_stats(
        feature_extractor,
        dataset.images.transpose(0, 2, 3, 1),
        dataset=dataset.path.name,
        dataset_sha256=file_sha256(data),
        batch_size=batch_size,
        progress=True,
    )
    save_stats(dest, stats)
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
    from fdm.generate import load_samples, resolve_device
    from fdm.metrics.scores import score, write_metrics
    from fdm.metrics.stats import check_matches, embed, load_stats

    ref = load_stats(stats)
    feature_extractor = open_extractor(extractor, mode, resolve_device(device), featnet, inception_dir)
    generated = load_samples(samples)
    check_matches(ref, feature_extractor, generated.images.shape[1:])
    features = embed(feature_extractor, generated.images, batch_size=batch_size, progress=True)
    values = score(features, ref)
    write_metrics(dest, values, [ref], len(generated.images), samples=str(samples), **generated.meta)
    click.echo(" ".join(f"{name}={value:.6g}" for name, value in values.items()))
