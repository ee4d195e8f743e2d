"""One job of a profile, resolved from the params file: what Snakemake rules and DVC stages run.

A workflow job is named by its identity (dataset, variant, training seed, ...) and everything else
comes from the profile. ``fdm train-config`` writes the resolved ``TrainConfig`` of one training job
to ``runs/<dataset>/<variant>/s<seed>/train.json`` (an artifact whose bytes change only when that
job's settings change, so DVC's content hashes rerun exactly the affected chain); ``fdm
prepare-dataset`` runs the ``fdm prepare`` preset a dataset entry names. ``grid(params)`` is the
evaluation grid written out as lists, because ``dvc.yaml`` can iterate lists but not compute them;
a profile's ``grid`` key must equal it (``fdm grid`` prints it). No torch import at module level:
the Snakefile imports this module.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import yaml

from fdm.config import Params, load_params
from fdm.errors import FdmError

INCEPTION_DIR = "data/inception"
INCEPTION_FILE = "inception-2015-12-05.pt"
FEATNET = "data/digitsnet.pt"
SAMPLES = "samples.npz"  # The kept images of an evaluation (eval.keep_samples), beside its metrics.json.


def snapshot_name(kimg: int) -> str:
    """``fdm.training.snapshot_name`` of a profile's integer milestone, without importing torch."""
    return f"{int(kimg):06d}.safetensors"


def measures(params: Params) -> list[str]:
    """Every feature space an evaluation scores in: ``eval.extractors``, Inception once per ``eval.modes``.

    Named as stats files and metrics are (``fdm.metrics.scores.measure_name``): ``digitsnet``,
    ``inception_clean``, ``inception_legacy_tensorflow``. One sampling pass scores them all.
    """
    names = []
    for extractor in params.eval.extractors:
        names += (
            [f"inception_{mode}" for mode in params.eval.modes] if extractor == "inception" else [extractor]
        )
    return names


def stats_path(dataset: str, measure: str) -> str:
    """Reference statistics of ``dataset`` in feature space ``measure``: one folder per dataset, which
    an evaluation depends on as a whole (DVC cannot list a variable number of files)."""
    return f"data/stats/{dataset}/{measure}.npz"


def ref_stats_job(measure: str) -> dict:
    """The network file `fdm ref-stats` reads for ``measure`` and its options, as DVC unpacks a dict."""
    if measure == "digitsnet":
        return {"network": FEATNET, "options": {"extractor": "digitsnet", "featnet": FEATNET}}
    mode = measure.removeprefix("inception_")
    options = {"extractor": "inception", "mode": mode, "inception-dir": INCEPTION_DIR}
    return {"network": f"{INCEPTION_DIR}/{INCEPTION_FILE}", "options": options}


def launcher(gpus: int, command: str) -> str:
    """``fdm <command>``, or the same under torchrun with one process per GPU when a job has several."""
    if gpus > 1:
        return f'torchrun --standalone --nproc-per-node {gpus} "$(command -v fdm)" {command}'
    return f"fdm {command}"


def featnet_dataset(params: Params) -> str:
    """The dataset the digits feature network learns from: the profile's first ``source: digits`` one."""
    for name, dataset in params.datasets.items():
        if dataset.source == "digits":
            return name
    raise FdmError(f"{params.path}: eval.extractors: digitsnet needs a dataset with source: digits")


def grid(params: Params) -> dict:
    """The profile's jobs as the flat lists and strings ``dvc.yaml`` iterates (the ``grid`` key).

    ``launch``: how train and evaluate start (torchrun for several GPUs), the same in both workflows.
    ``keep_samples``/``discard_samples``: one of them is empty, so dvc.yaml's ``evaluate_keep`` stages
    (with samples.npz as an output) or its ``evaluate`` stages exist, as ``eval.keep_samples`` says.
    """
    names = measures(params)
    extractors = params.eval.extractors
    scoring = {}
    if "digitsnet" in extractors:
        scoring["featnet"] = FEATNET
    if "inception" in extractors:
        scoring["inception-dir"] = INCEPTION_DIR
    keep = params.eval.keep_samples
    return {
        "featnet": [featnet_dataset(params)] if "digitsnet" in extractors else [],
        "inception": [INCEPTION_DIR] if "inception" in extractors else [],
        "measures": [{"name": name, **ref_stats_job(name)} for name in names],
        "scoring": scoring,
        "seeds": f"0-{params.eval.num_samples - 1}",
        "launch": {
            "train": launcher(params.gpus.train, "train"),
            "evaluate": launcher(params.gpus.evaluate, "evaluate"),
        },
        "keep_samples": [SAMPLES] if keep else [],
        "discard_samples": [] if keep else [True],
        "evaluations": [
            {
                "dataset": dataset,
                "sampler": sampler,
                "nfe": nfe,
                "kimg": kimg,
                "snapshot": snapshot_name(kimg),
                "stats": stats_options(dataset, names),
            }
            for dataset in params.datasets
            for kimg, sampler, nfe in params.eval_points(dataset)
        ],
    }


def stats_options(dataset: str, names: list[str]) -> str:
    """``--stats FILE`` per feature space: what `fdm evaluate` scores an evaluation of ``dataset`` against."""
    return " ".join(f"--stats {stats_path(dataset, name)}" for name in names)


def grid_yaml(params: Params) -> str:
    """The ``grid`` key as YAML to paste into the params file (one evaluation per line)."""
    return yaml.safe_dump({"grid": grid(params)}, sort_keys=False, default_flow_style=None, width=110)


def check_grid(params: Params) -> None:
    """Refuse a profile whose written-out ``grid`` disagrees with what it describes (when it has one)."""
    if params.grid is None:
        return
    expected = grid(params)
    if _plain(params.grid) != expected:
        keys = [key for key in expected if _plain(params.grid).get(key) != expected[key]]
        raise FdmError(
            f"{params.path}: grid.{keys[0] if keys else ''}: out of date with the profile; "
            f"replace the grid key with the output of `fdm grid --params {params.path}`"
        )


def _plain(value):
    """A plain dict/list copy of a frozen params value."""
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def load_checked(path: str) -> Params:
    """``load_params`` plus ``check_grid``: what every job command reads its profile with."""
    params = load_params(path)
    check_grid(params)
    return params


def train_config(params: Params, dataset: str, variant: str, train_seed: int) -> dict:
    """The ``TrainConfig`` fields of one job, minus ``dataset`` and ``outdir`` (given on the command line)."""
    if train_seed not in params.train_seeds:
        seeds = ", ".join(str(s) for s in params.train_seeds)
        raise FdmError(f"{params.path}: no training seed {train_seed} (train_seeds: {seeds})")
    return params.train_config(dataset, variant, train_seed)


def write_json(path: str | Path, values: dict) -> None:
    """Write ``values`` as sorted, indented JSON under a temporary name, then rename it into place."""
    from fdm.atomic import atomic_write

    text = json.dumps(values, indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def prepare_dataset(params: Params, name: str, dest: str) -> str:
    """Run the ``fdm prepare`` preset of dataset ``name``; returns its summary line."""
    from fdm.data import prepare as stage

    if name not in params.datasets:
        raise FdmError(f"{params.path}: no dataset {name!r} (datasets: {', '.join(params.datasets)})")
    d = params.datasets[name]
    fixed = {"digits": (16, 1), "cifar10": (32, 3)}
    if d.source in fixed and (d.resolution, d.channels) != fixed[d.source]:
        resolution, channels = fixed[d.source]
        raise FdmError(
            f"{params.path}: datasets.{name}: source {d.source} is {resolution}x{resolution} with "
            f"{channels} channel(s), not {d.resolution}x{d.resolution} with {d.channels}"
        )
    if d.source == "digits":
        return stage.prepare_digits(dest).line()
    if d.source == "cifar10":
        return stage.prepare_cifar10(dest, source=d.raw).line()
    if d.source == "folder":
        if d.raw is None:
            raise FdmError(
                f"{params.path}: datasets.{name}.raw: a folder dataset needs the folder of its images"
            )
        return stage.prepare_folder(
            dest, d.raw, resolution=d.resolution, labels=d.cond, channels=d.channels
        ).line()
    # FFHQ, AFHQv2: the preset's defaults, with the profile's size; labels only when training uses them.
    labels = True if d.cond else None
    return stage.prepare_preset(
        d.source, dest, d.raw, resolution=d.resolution, channels=d.channels, labels=labels
    ).line()


# Command line -------------------------------------------------------------------------------------------------

_PARAMS = click.option(
    "--params", "params_path", default="params.yaml", show_default=True, type=click.Path(dir_okay=False)
)


@click.command("train-config")
@_PARAMS
@click.option("--dataset", required=True)
@click.option("--variant", required=True)
@click.option("--train-seed", type=click.IntRange(min=0), required=True)
@click.option("--dest", required=True, type=click.Path(dir_okay=False), help="JSON file to write.")
def train_config_command(params_path, dataset, variant, train_seed, dest):
    """Write the resolved training settings of one job, for `fdm train --config`.

    \b
    fdm train-config --params params.yaml --dataset digits --variant fdm_edm --train-seed 0 \\
        --dest runs/digits/fdm_edm/s0/train.json
    fdm train --config runs/digits/fdm_edm/s0/train.json --data data/digits.zip --outdir runs/digits/fdm_edm/s0
    """
    params = load_checked(params_path)
    write_json(dest, train_config(params, dataset, variant, train_seed))
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
    params = load_checked(params_path)
    click.echo(prepare_dataset(params, dataset, dest))


@click.command("grid")
@_PARAMS
def grid_command(params_path):
    """Print the profile's `grid` key (the job lists dvc.yaml iterates), to paste into the params file."""
    click.echo(grid_yaml(load_params(params_path)), nl=False)
