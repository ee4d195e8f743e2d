"""The pipeline's jobs, each resolved from the params file and its identity: what Snakemake and DVC run.

A job is named by its identity (dataset, variant, training seed, snapshot, feature extractor) and reads
everything else from the profile, so a profile holds only what a person sets and both workflow tools
derive the same jobs from it (docs/pipeline.md). Where a job's settings are not a whole params key, a
light job writes them to a small JSON artifact that changes only when they do, and the heavy job reads
that: ``fdm train-config`` writes ``runs/<dataset>/<variant>/s<seed>/train.json`` for ``fdm train``,
``fdm eval-config`` writes ``runs/<dataset>/eval/<kimg>.json`` (the points every model is evaluated at
there) for ``fdm evaluate``. DVC then reruns a training or an evaluation exactly when its own settings
change, as Snakemake's params trigger does. No torch import at module level: the Snakefile imports this.
"""

from __future__ import annotations

import json
from pathlib import Path

from fdm import paths
from fdm.config import Params
from fdm.errors import FdmError


def write_json(path: str | Path, values: dict) -> None:
    """Write ``values`` as sorted, indented JSON under a temporary name, then rename it into place."""
    from fdm.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(values, indent=2, sort_keys=True) + "\n")


def train_config(params: Params, dataset: str, variant: str, train_seed: int) -> dict:
    """The ``TrainConfig`` fields of one job, minus ``dataset`` and ``outdir`` (given on the command line)."""
    if train_seed not in params.train_seeds:
        seeds = ", ".join(str(s) for s in params.train_seeds)
        raise FdmError(f"{params.path}: no training seed {train_seed} (train_seeds: {seeds})")
    return params.train_config(dataset, variant, train_seed)


def prepare_settings(params: Params, name: str) -> dict:
    """What ``fdm prepare-dataset`` makes dataset ``name`` from: its source, raw files, size and, where the
    source has optional labels (folders, FFHQ, AFHQv2), whether to keep them. Nothing else changes the zip."""
    if name not in params.datasets:
        raise FdmError(f"{params.path}: no dataset {name!r} (datasets: {', '.join(params.datasets)})")
    d = params.datasets[name]
    settings = {"source": d.source, "raw": d.raw, "resolution": d.resolution, "channels": d.channels}
    if d.source not in ("digits", "cifar10"):  # these two always carry their labels
        settings["labels"] = d.cond
    return settings


def prepare_dataset(params: Params, name: str, dest: str) -> str:
    """Run the ``fdm prepare`` preset of dataset ``name``; returns its summary line."""
    from fdm.data import prepare as stage

    d = prepare_settings(params, name)
    fixed = {"digits": (16, 1), "cifar10": (32, 3)}
    if d["source"] in fixed and (d["resolution"], d["channels"]) != fixed[d["source"]]:
        resolution, channels = fixed[d["source"]]
        raise FdmError(
            f"{params.path}: datasets.{name}: source {d['source']} is {resolution}x{resolution} with "
            f"{channels} channel(s), not {d['resolution']}x{d['resolution']} with {d['channels']}"
        )
    if d["source"] == "digits":
        return stage.prepare_digits(dest).line()
    if d["source"] == "cifar10":
        return stage.prepare_cifar10(dest, source=d["raw"]).line()
    if d["source"] == "folder":
        if d["raw"] is None:
            raise FdmError(
                f"{params.path}: datasets.{name}.raw: a folder dataset needs the folder of its images"
            )
        return stage.prepare_folder(
            dest, d["raw"], resolution=d["resolution"], labels=d["labels"], channels=d["channels"]
        ).line()
    # FFHQ, AFHQv2: the preset's defaults, with the profile's size; labels only when training uses them.
    return stage.prepare_preset(
        d["source"], dest, d["raw"], resolution=d["resolution"], channels=d["channels"],
        labels=True if d["labels"] else None,
    ).line()  # fmt: skip


def feature_network(extractor: str, dest: str) -> str:
    """Make the network of feature extractor ``extractor`` in folder ``dest``; returns a summary line.

    digitsnet: trained on the embedded digits (what every ``source: digits`` dataset holds), so the job
    needs no input; inception: clean-fid's TorchScript file, downloaded once (the only downloading job).
    """
    from fdm.names import EXTRACTORS

    if extractor == "digitsnet":
        from fdm.metrics.featnet import make_digitsnet

        return make_digitsnet(Path(dest) / paths.DIGITSNET_FILE)
    if extractor == "inception":
        from fdm.metrics.features import fetch_inception

        return f"Inception weights: {fetch_inception(dest)}"
    raise FdmError(f"unknown feature extractor {extractor!r}; expected one of {', '.join(EXTRACTORS)}")


def reference_stats(params: Params, dataset: str, extractor: str, dest: str, device=None) -> list[str]:
    """Statistics of dataset ``dataset`` in every mode the profile scores ``extractor`` in, as
    ``<dest>/<mode>.npz``; returns the files written."""
    from fdm.metrics.features import open_network
    from fdm.metrics.stats import dataset_stats
    from fdm.names import modes

    if dataset not in params.datasets:
        raise FdmError(f"{params.path}: no dataset {dataset!r} (datasets: {', '.join(params.datasets)})")
    if extractor not in params.eval.extractors:
        known = ", ".join(params.eval.extractors)
        raise FdmError(f"{params.path}: eval.extractors has no {extractor!r} (it has {known})")
    written = []
    for mode in modes(extractor, params.eval.modes):
        path = f"{dest}/{mode}.npz"
        network = open_network(extractor, mode, paths.network(extractor), device or "cpu")
        dataset_stats(paths.dataset_zip(dataset), path, network)
        written.append(path)
    return written


def import_released(params: Params, dataset: str, formulation: str, record: str, **limits) -> str:
    """Import the profile's released checkpoint of ``formulation`` on ``dataset`` as the snapshot of its
    final milestone in ``runs/<dataset>/<formulation>/pretrained/``, and write ``record`` (its digest, as a
    training job's record) once it is there; returns a summary line.

    The pickle's preconditioner must be ``formulation`` (an FDM_EDMPrecond for fdm_edm, ...); ``limits`` are
    ``import_checkpoint``'s ``max_bytes`` and ``download_seconds``.
    """
    from fdm.checkpoints import import_checkpoint
    from fdm.digest import file_sha256

    entry = params.released(dataset, formulation)
    run = paths.pretrained(dataset, formulation)
    snapshot = paths.snapshot(run, params.duration_kimg)
    config = import_checkpoint(entry.url, snapshot, sha256=entry.sha256, **limits)
    found = config["formulation"]["name"]
    if found != formulation:
        Path(snapshot).unlink()
        raise FdmError(
            f"{entry.url} holds a {config['imported']['class_name']} ({found}), not the {formulation} "
            f"the profile's pretrained entry for {dataset} says"
        )
    summary = {
        "run": run,
        "source": entry.url,
        "snapshots": {paths.snapshot_name(params.duration_kimg): file_sha256(snapshot)},
    }
    write_json(record, summary)
    return f"{entry.url} -> {snapshot} ({config['imported']['class_name']})"
