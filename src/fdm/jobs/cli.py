"""`fdm prepare-dataset`, `fdm feature-net`, `fdm train-config`, `fdm eval-config` and `fdm code-digest`: the
pipeline's light jobs."""

from __future__ import annotations

import click

from fdm.errors import FdmError

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
        --dest out/smoke/runs/digits/fdm_edm/s0/train.json
    """
    from fdm.jobs import open_profile, train_config, write_json

    write_json(dest, train_config(open_profile(params_path), dataset, variant, train_seed))
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
    fdm eval-config --params params.yaml --dataset digits --kimg 20 --dest out/smoke/runs/digits/eval/20.json
    fdm evaluate --config out/smoke/runs/digits/eval/20.json --run out/smoke/runs/digits/edm/s0
    """
    from fdm.jobs import open_profile, write_json

    write_json(dest, open_profile(params_path).eval_plan(dataset, kimg))
    click.echo(f"wrote {dest}")


@click.command("prepare-dataset")
@_PARAMS
@click.option("--dataset", required=True, help="A key of the profile's datasets.")
@click.option("--dest", required=True, type=click.Path(dir_okay=False), help="Output zip.")
def prepare_dataset_command(params_path, dataset, dest):
    """Prepare a dataset of the profile with the `fdm prepare` preset its entry names (source, raw, size).

    \b
    fdm prepare-dataset --params config/paper.yaml --dataset ffhq --dest out/paper/data/ffhq.zip
    """
    from fdm.jobs import open_profile, prepare_dataset

    click.echo(prepare_dataset(open_profile(params_path), dataset, dest))


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


@click.command("code-digest")
@click.option("--stage", required=True, help="A pipeline stage: prepare, train, evaluate, report, ...")
@_DEST
def code_digest_command(stage, dest):
    """Write the digest of a stage's source code, which the stage's jobs depend on (rerun when it changes).

    \b
    fdm code-digest --stage evaluate --dest data/code/evaluate.json
    """
    from fdm.jobs import write_json
    from fdm.provenance import STAGES, digest_record

    if stage not in STAGES:
        raise FdmError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    write_json(dest, digest_record(stage))
    click.echo(f"wrote {dest}")
