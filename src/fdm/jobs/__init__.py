"""The pipeline's jobs, each resolved from the params file and its identity: what Snakemake and DVC run.

A job is named by its identity (dataset, variant, training seed, snapshot, feature extractor) and reads
everything else from the profile, so a profile holds only what a person sets and both workflow tools
derive the same jobs from it (docs/pipeline.md). Where a job's settings are not a whole params key, a
light job writes them to a small JSON artifact that changes only when they do, and the heavy job reads
that: ``fdm train-config`` writes ``<runs>/<dataset>/<variant>/s<seed>/train.json`` for ``fdm train``,
``fdm eval-config`` writes ``<runs>/<dataset>/eval/<kimg>.json`` (the points every model is evaluated at
there) for ``fdm evaluate``. DVC then reruns a training or an evaluation exactly when its own settings
change, as Snakemake's params trigger does; ``fdm code-digest`` does the same for code
(``fdm.provenance``). No torch import at module level: the Snakefile imports this.

Every job of a profile writes under the profile's root (``fdm.paths.out``); ``open_profile`` loads the
profile and claims the root for it, warning in one line when another profile file of the same name
wrote there first.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from fdm import paths
from fdm.config import Params, load_params
from fdm.errors import FdmError


def write_json(path: str | Path, values: dict) -> None:
    """Write ``values`` as sorted, indented JSON under a temporary name, then rename it into place."""
    from fdm.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(values, indent=2, sort_keys=True) + "\n")


def root_conflict(params: Params) -> str | None:
    """The warning line when the profile's root (``out/<name>/``) was first written by another profile
    file with other contents (two profiles of the same name in one checkout), else None."""
    mark = Path(paths.profile_mark(params.name))
    try:
        first = json.loads(mark.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if first.get("params_file") == str(params.path) or first.get("sha256") == _file_sha256(params.path):
        return None
    return (
        f"fdm: warning: {params.path} writes into {paths.out(params.name)}/, which {first.get('params_file')} "
        f"(another profile named {params.name!r}) wrote first; give one of them another name"
    )


def _file_sha256(path) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def open_profile(path: str | Path) -> Params:
    """Load the params file of a job; mark the profile's root as its own, or warn (one line) that another
    profile of the same name wrote there first."""
    params = load_params(path)
    warning = root_conflict(params)
    if warning is not None:
        print(warning, file=sys.stderr)
    elif not Path(paths.profile_mark(params.name)).is_file():
        _claim(
            Path(paths.profile_mark(params.name)),
            {"params_file": str(params.path), "sha256": _file_sha256(path)},
        )
    return params


def _claim(mark: Path, values: dict) -> None:
    """Write ``mark`` unless it exists, safely while other jobs of the profile do the same: the first
    complete file wins (a private temporary file, hard-linked to the name, which fails if it exists)."""
    import tempfile

    from fdm.atomic import give_plain_mode

    mark.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{mark.name}.", suffix=".claim", dir=mark.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(values, indent=2, sort_keys=True) + "\n")
        give_plain_mode(tmp)
        os.link(tmp, mark)
    except FileExistsError:
        pass  # another job of the profile claimed it first
    finally:
        os.unlink(tmp)


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
    """Prepare dataset ``name`` with its ``fdm prepare`` preset into the shared store (``fdm.store``), keyed
    by its settings and the preparing code, and copy it to ``dest``; returns a summary line."""
    from fdm.provenance import source_digest
    from fdm.store import provide

    inputs = {"settings": prepare_settings(params, name), "source_sha256": source_digest("prepare")}
    lines = []
    reused = provide(dest, "datasets", inputs, lambda path: lines.append(_prepare(params, name, path)))
    return f"{dest}: from the store (prepared before with the same settings and code)" if reused else lines[0]


def _prepare(params: Params, name: str, dest: str) -> str:
    """Run the ``fdm prepare`` preset of dataset ``name`` into ``dest``; returns its summary line."""
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


def network_identity(folder: Path) -> dict[str, str]:
    """What a feature network's folder is, for the store's key: each file's SHA-256, but a TorchScript
    archive's (``.pt``) the digest of its weights, since its bytes hold a random serialization id that
    differs between two saves of the same network; hidden files (a runner's markers) left out."""
    import torch

    from fdm.digest import file_sha256
    from fdm.metrics.features import weights_sha256

    identity = {}
    for path in sorted(folder.glob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.suffix == ".pt":
            identity[path.name] = "weights:" + weights_sha256(torch.jit.load(str(path), map_location="cpu"))
        else:
            identity[path.name] = file_sha256(path)
    return identity


def reference_stats(params: Params, dataset: str, extractor: str, dest: str, device=None) -> list[str]:
    """Statistics of the profile's dataset ``dataset`` in every mode the profile scores ``extractor`` in,
    as ``<dest>/<mode>.npz``; returns the files written.

    Each file comes from the shared store (``fdm.store``), keyed by the bytes of the dataset and of the
    network, the mode and the code, so profiles with the same dataset compute it once.
    """
    from fdm.digest import file_sha256
    from fdm.metrics.features import open_network
    from fdm.metrics.stats import dataset_stats
    from fdm.names import modes
    from fdm.provenance import source_digest
    from fdm.store import provide

    if dataset not in params.datasets:
        raise FdmError(f"{params.path}: no dataset {dataset!r} (datasets: {', '.join(params.datasets)})")
    if extractor not in params.eval.extractors:
        known = ", ".join(params.eval.extractors)
        raise FdmError(f"{params.path}: eval.extractors has no {extractor!r} (it has {known})")
    data = paths.dataset_zip(params.name, dataset)
    folder = Path(paths.network(extractor))
    weights = network_identity(folder)
    written = []
    for mode in modes(extractor, params.eval.modes):
        path = f"{dest}/{mode}.npz"
        inputs = {
            "dataset_sha256": file_sha256(data), "extractor": extractor, "mode": mode, "network": weights,
            "source_sha256": source_digest("ref_stats"),
        }  # fmt: skip

        def make(target, mode=mode):
            dataset_stats(data, target, open_network(extractor, mode, str(folder), device or "cpu"))

        provide(path, "stats", inputs, make)
        written.append(path)
    return written


def import_released(params: Params, dataset: str, formulation: str, record: str, **limits) -> str:
    """Import the profile's released checkpoint of ``formulation`` on ``dataset`` as the snapshot of its
    final milestone in ``<runs>/<dataset>/<formulation>/pretrained/``, and write ``record`` (its digest and
    the importer's code version, as a training job's record) once it is there; returns a summary line.

    The pickle's preconditioner must be ``formulation`` (an FDM_EDMPrecond for fdm_edm, ...); ``limits`` are
    ``import_checkpoint``'s ``max_bytes`` and ``download_seconds``.
    """
    from fdm.checkpoints import import_checkpoint
    from fdm.digest import file_sha256
    from fdm.provenance import code_version

    entry = params.released(dataset, formulation)
    run = paths.pretrained(dataset, formulation, root=paths.runs(params.name))
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
        "code": code_version("import_checkpoint"),
    }
    write_json(record, summary)
    return f"{entry.url} -> {snapshot} ({config['imported']['class_name']})"
