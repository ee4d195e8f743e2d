"""What the pipeline's files say MLflow should hold: one planned run per model, evaluation and report.

Only the profile's runs are planned: its models (run folders holding ``train.json`` or ``train.jsonl``),
its released checkpoints (run folders holding their import record), their evaluations at the profile's
snapshots and points, and each dataset's report folder. A model's run carries its training curves and,
as metric histories, its scores, the report's two views:

- ``<metric>/<sampler>-<nfe>`` (``fid_digitsnet/heun-19``), step = images seen: the metric over training at
  the main sampler and NFE, the one the profile evaluates at every snapshot (FID vs Mimg);
- ``<metric>_vs_nfe/<sampler>`` (``fid_digitsnet_vs_nfe/heun``), step = NFE: at the final snapshot, every
  NFE of the sampler (FID vs NFE).

MLflow's chart view groups metrics by the part before "/", so each metric gets one section for its
curves over training and one for its curves over NFE, shared by every selected model (docs/tracking.md).
Every run spans the work itself: a model from its training's first start to its last tick
(``train.jsonl``), an evaluation its sampling and scoring (``timing.json``), a report the writing of its
files. Every run carries MLflow's source tags (``mlflow.source.git.commit``, ``.name``, ``.type``) and
``fdm.source_sha256`` from the code version its record names (``fdm.provenance``): a model's from
``trained.json``, an evaluation's from ``timing.json``, a report's from ``versions.json``.

A model run is named ``<variant>-s<seed>`` and its params are the settings its record names, flattened:
the same run that live logging during training (``fdm train --tracking``) makes, which ``fdm track``
replaces (``model_run_name``, ``model_params``). A released checkpoint's run is named
``<formulation>-pretrained`` and carries, beside its scores, the paper's number for each point as a
``paper.<metric>/<sampler>-<nfe>`` param where the paper reports one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from fdm import paths
from fdm.digest import file_sha256
from fdm.errors import FdmError
from fdm.tracking.store import flatten, is_number, reason

_PROVENANCE = {"num_samples", "nfe", "num_steps"}  # numbers in metrics.json that are not scores
_NOT_CURVES = {"kimg", "started", "time"}  # numbers in train.jsonl that are not training curves


@dataclasses.dataclass(frozen=True)
class Planned:
    """One MLflow run as the files on disk describe it."""

    key: str  # fdm.key: "<dataset>/<variant>/s<seed>", ".../eval/<kimg>/<sampler>-<nfe>", "<dataset>/report"
    kind: str  # model | evaluation | report
    dataset: str
    name: str
    tags: dict
    params: dict
    metrics: list  # (name, value, step, timestamp ms or None)
    artifacts: list  # local paths
    digest: str  # SHA-256 over the files behind the run
    parent: str | None = None  # key of the parent run
    start: int | None = None  # ms since the epoch; None: unknown (MLflow then uses the logging time)
    end: int | None = None


def _digest(files: dict[str, str]) -> str:
    """SHA-256 over (name, file SHA-256) pairs: changes when any file changes, appears or disappears."""
    return hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise FdmError(f"{path}: not readable JSON ({reason(err)})") from None


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


def _span(values, ends) -> tuple[int | None, int | None]:
    values, ends = [v for v in values if is_number(v)], [v for v in ends if is_number(v)]
    return _ms(min(values) if values else None), _ms(max(ends) if ends else None)


SOURCE_NAMES = {
    "train": "fdm train", "evaluate": "fdm evaluate", "report": "fdm report",
    "import_checkpoint": "fdm import-checkpoint",
}  # fmt: skip


def source_tags(code: dict | None, stage: str) -> dict:
    """MLflow's source tags and ours for the code version ``code`` (a record's ``code`` block)."""
    code = code if isinstance(code, dict) else {}
    return {
        "mlflow.source.git.commit": str(code.get("commit", "unknown")),
        "mlflow.source.name": SOURCE_NAMES[code.get("stage", stage)],
        "mlflow.source.type": "LOCAL",
        "fdm.version": str(code.get("package", "unknown")),
        "fdm.source_sha256": str(code.get("source_sha256", "unknown")),
        "fdm.source_dirty": str(code.get("dirty")).lower(),
    }


def model_run_name(variant: str, seed: str) -> str:
    """The MLflow name of a model's run: ``edm-s0`` (``seed`` is the run folder's name, ``s0``)."""
    return f"{variant}-{seed}"


def model_params(settings: dict, snapshots: dict[str, str] | None = None) -> dict:
    """A model run's params: its training settings flattened, and each snapshot's path and SHA-256
    (``snapshots``: path -> SHA-256)."""
    values = flatten(settings)
    for path, sha in (snapshots or {}).items():
        stem = Path(path).stem
        values[f"snapshots.{stem}.path"] = str(path)
        values[f"snapshots.{stem}.sha256"] = sha
    return values


@dataclasses.dataclass(frozen=True)
class _Evaluation:
    kimg: int
    sampler: str
    nfe: int
    scores: dict
    run: Planned


def _evaluation(
    folder: Path, model_key: str, model_tags: dict, kimg: int, sampler: str, nfe: int
) -> _Evaluation:
    path = folder / paths.METRICS_FILE
    record = _read_json(path)
    scores = {k: v for k, v in record.items() if k not in _PROVENANCE and is_number(v)}
    provenance = {k: v for k, v in record.items() if k not in scores}
    files = {"metrics.json": file_sha256(path)}
    start = end = None
    timing = folder / paths.TIMING_FILE
    if timing.is_file():
        files["timing.json"] = file_sha256(timing)
        times = _read_json(timing)
        start, end = _span([times.get("started")], [times.get("ended")])
    artifacts = [path]
    grid = folder / paths.GRID_FILE
    if grid.is_file():
        files["grid.png"] = file_sha256(grid)
        artifacts.append(grid)
    code = _read_json(timing).get("code") if timing.is_file() else None
    tags = {
        **{k: model_tags[k] for k in ("profile", "params_file", "dataset", "variant", "train_seed")},
        "stage": "evaluate", "kimg": str(kimg), "sampler": sampler, "nfe": str(nfe),
        **source_tags(code, "evaluate"),
    }  # fmt: skip
    run = Planned(
        key=f"{model_key}/eval/{kimg}/{sampler}-{nfe}", kind="evaluation", dataset=model_tags["dataset"],
        name=f"{model_key.split('/', 1)[1].replace('/', '-')} {kimg}kimg {sampler}-{nfe}", tags=tags,
        params={**flatten(provenance), "kimg": str(kimg), "sampler": sampler, "nfe": str(nfe)},
        metrics=[(k, v, kimg * 1000, end) for k, v in scores.items()], artifacts=artifacts,
        digest=_digest(files), parent=model_key, start=start, end=end,
    )  # fmt: skip
    return _Evaluation(kimg, sampler, nfe, scores, run)


def _training(run_dir: Path, files: dict) -> tuple[list, int | None, int | None]:
    """The training curves of ``train.jsonl`` (step = images seen) and the training's span."""
    log = run_dir / paths.LOG_FILE
    if not log.is_file():
        return [], None, None
    files["train.jsonl"] = file_sha256(log)
    fallback = _ms(os.stat(log).st_mtime)
    curves, starts, ends = [], [], []
    for number, line in enumerate(log.read_text(encoding="utf-8").splitlines(), 1):
        try:
            record = json.loads(line)
            images = round(record["kimg"] * 1000)
        except (ValueError, KeyError, TypeError) as err:
            raise FdmError(f"{log}: line {number} is not a tick record ({reason(err)})") from None
        stamp = _ms(record["time"]) if is_number(record.get("time")) else fallback
        curves += [(k, v, images, stamp) for k, v in record.items() if k not in _NOT_CURVES and is_number(v)]
        starts.append(record.get("started"))
        ends.append(record.get("time"))
    start, end = _span(starts, ends)
    return curves, start, end


def _model(
    params, run_dir: Path, key: str, tags: dict, evaluations: list[_Evaluation], extra: dict | None = None
) -> Planned:
    """A model's run: its record's settings (else train.json's) and snapshots as params, its training
    curves and scores as metrics, its record's code as source tags."""
    files, settings, code = {}, {}, None
    config, record = run_dir / "train.json", run_dir / paths.RECORD_FILE
    if config.is_file():
        files["train.json"] = file_sha256(config)
        settings = _read_json(config)
    if record.is_file():
        files[paths.RECORD_FILE] = file_sha256(record)
        recorded = _read_json(record)
        settings = recorded.get("settings", settings)
        code = recorded.get("code")
    metrics, start, end = _training(run_dir, files)
    snapshots = {}
    for snapshot in sorted((run_dir / paths.SNAPSHOT_DIR).glob("*.safetensors")):
        snapshots[str(snapshot)] = files[f"snapshots/{snapshot.name}"] = file_sha256(snapshot)
    values = {**model_params(settings, snapshots), **(extra or {})}
    main = params.eval.main[key.split("/")[0]]
    for e in evaluations:
        files[e.run.key] = e.run.digest
        stamp = e.run.end
        for metric, value in e.scores.items():
            if (e.sampler, e.nfe) == (main.sampler, main.nfe):
                metrics.append((f"{metric}/{e.sampler}-{e.nfe}", value, e.kimg * 1000, stamp))
            if e.kimg == params.duration_kimg:
                metrics.append((f"{metric}_vs_nfe/{e.sampler}", value, e.nfe, stamp))
    dataset, variant, seed = key.split("/")
    stage = "import_checkpoint" if seed == "pretrained" else "train"
    return Planned(
        key=key, kind="model", dataset=dataset, name=model_run_name(variant, seed),
        tags={**tags, **source_tags(code, stage)}, params=values, metrics=metrics, artifacts=[],
        digest=_digest(files), start=start, end=end,
    )  # fmt: skip


def _report(dataset: str, files: list[Path], common_tags: dict) -> Planned:
    stamps = [os.stat(p).st_mtime for p in files]
    versions = next((p for p in files if p.name == "versions.json"), None)
    code = _read_json(versions).get("report") if versions is not None else None
    return Planned(
        key=f"{dataset}/report", kind="report", dataset=dataset, name="report",
        tags={**common_tags, "dataset": dataset, "stage": "report", **source_tags(code, "report")}, params={},
        metrics=[], artifacts=files, digest=_digest({p.name: file_sha256(p) for p in files}),
        start=_ms(min(stamps)), end=_ms(max(stamps)),
    )  # fmt: skip


def _paper_numbers(params, dataset: str, formulation: str) -> dict:
    """The paper's numbers for a released checkpoint's points, as ``paper.<metric>/<sampler>-<nfe>`` params:
    only where the profile scores the paper's metric and the paper reports the point (at 200 Mimg)."""
    from fdm import paper_results  # the paper's tables: only where released checkpoints are tracked

    if params.report.metric != paper_results.METRIC:
        return {}
    source, kimg = params.datasets[dataset].source, params.duration_kimg
    main = params.eval.main[dataset]
    by_nfe = paper_results.fid_vs_nfe(source)
    values = {}
    for sampler, nfe in params.points(dataset, kimg):
        if (sampler, nfe) == (main.sampler, main.nfe) and nfe == paper_results.MAIN_NFE.get(source):
            paper = paper_results.fid_vs_kimg(source).get(formulation, {}).get(kimg)
        else:
            paper = by_nfe.get(sampler, {}).get(formulation, {}).get(nfe)
        if paper is not None:
            values[f"paper.{paper_results.METRIC}/{sampler}-{nfe}"] = str(paper)
    return values


def plan(params, runs: str | os.PathLike, reports: str | os.PathLike) -> list[Planned]:
    """Every run the profile's files under ``runs`` and ``reports`` describe, parents before their children."""
    common = {"profile": params.tracking.experiment_prefix, "params_file": str(params.path)}
    planned = []
    for dataset, variant, seed in params.models():
        run_dir = Path(paths.run(dataset, variant, seed, root=str(runs)))
        if not any((run_dir / f).is_file() for f in ("train.json", paths.LOG_FILE)):
            continue
        key = f"{dataset}/{variant}/s{seed}"
        tags = {**common, "dataset": dataset, "variant": variant, "train_seed": str(seed), "stage": "train"}
        evaluations = [
            _evaluation(folder, key, tags, kimg, sampler, nfe)
            for kimg in params.snapshot_kimg
            for sampler, nfe in params.points(dataset, kimg)
            for folder in [Path(paths.point(str(run_dir), kimg, sampler, nfe))]
            if (folder / paths.METRICS_FILE).is_file()
        ]
        planned.append(_model(params, run_dir, key, tags, evaluations))
        planned += [e.run for e in evaluations]
    for entry in params.pretrained:
        run_dir = Path(paths.pretrained(entry.dataset, entry.formulation, root=str(runs)))
        if not (run_dir / paths.RECORD_FILE).is_file():
            continue
        key, kimg = f"{entry.dataset}/{entry.formulation}/pretrained", params.duration_kimg
        tags = {**common, "dataset": entry.dataset, "variant": entry.formulation, "train_seed": "pretrained",
                "stage": "import", "source_url": entry.url}  # fmt: skip
        evaluations = [
            _evaluation(folder, key, tags, kimg, sampler, nfe)
            for sampler, nfe in params.points(entry.dataset, kimg)
            for folder in [Path(paths.point(str(run_dir), kimg, sampler, nfe))]
            if (folder / paths.METRICS_FILE).is_file()
        ]
        extra = {"source_url": entry.url, **_paper_numbers(params, entry.dataset, entry.formulation)}
        planned.append(_model(params, run_dir, key, tags, evaluations, extra))
        planned += [e.run for e in evaluations]
    for dataset in params.datasets:
        folder = Path(reports) / dataset
        files = sorted(p for p in folder.glob("*") if p.is_file() and not p.name.startswith("."))
        if files:
            planned.append(_report(dataset, files, common))
    return planned
