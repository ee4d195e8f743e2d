"""`fdm prepare-dataset`, `fdm feature-net`, `fdm train-config` and `fdm eval-config`: the pipeline's light jobs."""

from __future__ import annotations

import click

_PARAMS = click.option(
    "--params", "params_path", default="params.yaml", show_default=True, type=click.Path(dir_okay=False)
)
_DEST = click.option("--dest", required=True, type=click.Path(dir_okay=False), help="JSON file to write.")


@click.command("train-config")
@_PARAMS
@click.option("--dataset", required=True)
@click.option("--variant", required=True)
@click.option("--train-seed", type=click.IntRange(min=0), required=True)
@_DEST
def train_config_command(params_path, dataset, variant, train_seed, dest):
    """Write the resolved training settings of one job, for `fdm train --config`.

    \b
    fdm train-config --params params.yaml --dataset digits --variant fdm_edm --train-seed 0 \\
        --dest runs/digits/fdm_edm/s0/train.json
    fdm train --config runs/digits/fdm_edm/s0/train.json --data data/digits.zip --outdir runs/digits/fdm_edm/s0
    """
    from fdm.config import load_params
    from fdm.jobs import train_config, write_json

    write_json(dest, train_config(load_params(params_path), dataset, variant, train_seed))
    click.echo(f"wrote {dest}")


@click.command("eval-config")
@_PARAMS
@click.option("--dataset", required=True)
@click.option(
    "--kimg", type=click.IntRange(min=1), required=True, help="A snapshot milestone of the profile."
)
@_DEST
def eval_config_command(params_path, dataset, kimg, dest):
    """Write the evaluation plan of one snapshot milestone (points, seeds, scoring), for `fdm evaluate --config`.

    \b
    fdm eval-config --params params.yaml --dataset digits --kimg 20 --dest runs/digits/eval/20.json
    fdm evaluate --config runs/digits/eval/20.json --run runs/digits/edm/s0
    """
    from fdm.config import load_params
    from fdm.jobs import write_json

    write_json(dest, load_params(params_path).eval_plan(dataset, kimg))
    click.echo(f"wrote {dest}")


@click.command("prepare-dataset")
@_PARAMS
@click.option("--dataset", required=True, help="A key of the profile's datasets.")
@click.option("--dest", required=True, type=click.Path(dir_okay=False), help="Output zip.")
def prepare_dataset_command(params_path, dataset, dest):
    """Prepare a dataset of the profile with the `fdm prepare` preset its entry names (source, raw, size).

    \b
    fdm prepare-dataset --params config/paper.yaml --dataset ffhq --dest data/ffhq.zip
    """
    from fdm.config import load_params
    from fdm.jobs import prepare_dataset

    click.echo(prepare_dataset(load_params(params_path), dataset, dest))


@click.command("feature-net")
@click.option(
    "--extractor", required=True, help="digitsnet (trained on the digits) or inception (downloaded)."
)
@click.option("--dest", required=True, type=click.Path(file_okay=False), help="Folder of the network.")
def feature_net_command(extractor, dest):
    """Make a feature extractor's network: train the digits network, or download Inception's weights.

    \b
    fdm feature-net --extractor digitsnet --dest data/networks/digitsnet
    fdm feature-net --extractor inception --dest data/networks/inception
    """
    from fdm.jobs import feature_network

    click.echo(feature_network(extractor, dest))
