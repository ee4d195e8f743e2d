"""Evaluate one snapshot at every point of its plan: sample once per point, score in every feature space.

A plan (``fdm eval-config``: ``fdm.paths.EVAL_PLAN``) lists the (sampler, NFE) points of a
snapshot, the seeds, the reference statistics and the feature networks. ``evaluate_snapshot`` loads the
snapshot and the feature networks once, then for each point samples the seeds' images once and scores
them in every feature space (the paper's two Inception modes), writing into
``eval/<kimg>/<sampler>-<nfe>/``: ``timing.json`` (when its sampling and scoring ran), ``grid.png``,
``samples.npz`` with ``keep_samples``, and last ``metrics.json``. A point whose ``metrics.json`` already
records this very snapshot, these seeds and these reference statistics, and whose ``timing.json`` names
this evaluation code (``fdm.provenance``), is kept as it is, so a killed job resumes point by point and an
edited plan computes only its new points. The job's record, ``evaluated.json``, lists every point's
metrics and the SHA-256 of its ``metrics.json``, and the code version.

The snapshot must be the one its training recorded: a run folder's ``trained.json`` names each snapshot's
SHA-256, and a snapshot whose bytes differ is refused before anything is computed.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from fdm import paths
from fdm.atomic import atomic_write_text
from fdm.digest import file_sha256
from fdm.distributed import World
from fdm.errors import FdmError
from fdm.faults import fault_point
from fdm.generation.generate import generate_all
from fdm.metrics.scores import metrics_record, score, write_metrics
from fdm.metrics.stats import check_matches, load_stats
from fdm.names import measure_name, metric_name, steps_for_nfe
from fdm.provenance import code_version
from fdm.samples import Samples, format_seeds, parse_seeds, save_grid, save_samples


@dataclasses.dataclass(frozen=True)
class EvalPlan:
    """The evaluation of one snapshot milestone (``fdm.config.Params.eval_plan`` writes it)."""

    kimg: int
    points: tuple[tuple[str, int], ...]  # (sampler, nfe)
    seeds: str
    batch: int
    stats: tuple[str, ...]  # one reference statistics file per feature space
    networks: Mapping[str, str]  # extractor -> the folder of its network (fdm.paths.network)
    keep_samples: bool


def read_plan(path: str) -> EvalPlan:
    """Read a plan written by ``fdm eval-config``; anything else is one ``FdmError`` line."""
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
        return EvalPlan(
            kimg=int(values["kimg"]),
            points=tuple((p["sampler"], int(p["nfe"])) for p in values["points"]),
            seeds=str(values["seeds"]),
            batch=int(values["batch"]),
            stats=tuple(values["stats"]),
            networks=dict(values["networks"]),
            keep_samples=bool(values["keep_samples"]),
        )
    except FileNotFoundError:
        raise FdmError(f"evaluation plan {path} does not exist: run `fdm eval-config` first") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise FdmError(f"{path} is not an evaluation plan written by `fdm eval-config` ({err!r})") from None


@dataclasses.dataclass(frozen=True)
class PointFiles:
    """Where one evaluation point's outputs go; ``grid``, ``samples`` and ``timing`` are optional."""

    metrics: str
    grid: str | None = None
    samples: str | None = None
    timing: str | None = None

    @classmethod
    def inside(cls, folder: str, keep_samples: bool) -> PointFiles:
        """The files of a pipeline evaluation point in ``folder`` (``fdm.paths.point``)."""
        return cls(
            metrics=f"{folder}/{paths.METRICS_FILE}",
            grid=f"{folder}/{paths.GRID_FILE}",
            samples=f"{folder}/{paths.SAMPLES_FILE}" if keep_samples else None,
            timing=f"{folder}/{paths.TIMING_FILE}",
        )

    def existing(self) -> bool:
        return all(Path(f).is_file() for f in (self.metrics, self.grid, self.samples, self.timing) if f)


def open_spaces(stats: Sequence[str], make_extractor: Callable, image_shape) -> list[tuple]:
    """(extractor, reference statistics) of every feature space of ``stats``: one extractor per file,
    built by ``make_extractor(ref, path)`` and checked against the statistics and the images' (H, W, C)."""
    refs = [load_stats(path) for path in stats]
    seen = {}
    for ref, path in zip(refs, stats, strict=True):
        space = measure_name(ref.extractor, ref.mode)
        if space in seen:
            raise FdmError(
                f"{seen[space]} and {path} are both {space} statistics; give one per feature space"
            )
        seen[space] = path
    spaces = [(make_extractor(ref, path), ref) for ref, path in zip(refs, stats, strict=True)]
    for extractor, ref in spaces:
        check_matches(ref, extractor, image_shape)
    return spaces


def provenance(
    snapshot: str, snapshot_sha256: str, sampler: str, nfe_value: int, seeds: Sequence[int]
) -> dict:
    """What a point's metrics were measured on, besides the feature spaces: snapshot, sampler, seeds."""
    return {
        "sampler": sampler,
        "num_steps": steps_for_nfe(sampler, nfe_value),
        "nfe": nfe_value,
        "snapshot": str(snapshot),
        "snapshot_sha256": snapshot_sha256,
        "seeds": format_seeds(seeds),
    }


def up_to_date(files: PointFiles, expected: dict, metric_keys: Sequence[str], source_sha256: str) -> bool:
    """Whether a point's outputs exist, its metrics.json records exactly ``expected`` (all but the values)
    and its timing.json names the evaluation code ``source_sha256``."""
    if not files.existing():
        return False
    try:
        record = json.loads(Path(files.metrics).read_text(encoding="utf-8"))
        timing = json.loads(Path(files.timing).read_text(encoding="utf-8")) if files.timing else {}
    except (OSError, ValueError):
        return False
    if files.timing and (timing.get("code") or {}).get("source_sha256") != source_sha256:
        return False
    return isinstance(record, dict) and {k: v for k, v in record.items() if k not in metric_keys} == expected


def check_trained(run_dir: str, kimg: int, snapshot: str, digest: str) -> None:
    """Refuse ``snapshot`` if its SHA-256 ``digest`` differs from the one its run's training record names."""
    record = Path(paths.trained(run_dir))
    if not record.is_file():  # a run folder made by hand, without the pipeline's record
        return
    try:
        expected = json.loads(record.read_text(encoding="utf-8"))["snapshots"][paths.snapshot_name(kimg)]
    except (OSError, ValueError, KeyError, TypeError):
        raise FdmError(f"{record} names no snapshot at {kimg} kimg; rerun the training") from None
    if expected != digest:
        raise FdmError(
            f"{snapshot} has SHA-256 {digest}, but {record} recorded {expected}: the snapshot changed after "
            "training (rerun the training)"
        )


def evaluate_point(
    denoiser, spaces, seeds: Sequence[int], about: dict, files: PointFiles, world: World, batch_size: int
) -> dict | None:
    """Sample ``seeds`` at ``about``'s sampler and steps, score in every space, write ``files``.

    Returns the metric values on rank 0 (None elsewhere). metrics.json is written last, so its presence
    means the point is complete.
    """
    started = time.time()
    result = generate_all(
        denoiser, seeds, about["sampler"], about["num_steps"], world, batch_size, progress=True,
        extractors=[extractor for extractor, _ in spaces], keep_images=files.samples is not None,
    )  # fmt: skip
    if result is None:
        return None
    fault_point("evaluate:scoring", files.metrics)
    values = {}
    for features, (_, ref) in zip(result["features"], spaces, strict=True):
        values.update(score(features, ref))
    if files.timing is not None:
        timing = {"started": started, "ended": time.time(), "code": code_version("evaluate")}
        atomic_write_text(files.timing, json.dumps(timing, sort_keys=True) + "\n")
    if files.samples is not None:
        save_samples(files.samples, Samples(result["images"], result["seeds"], result["labels"], about))
    if files.grid is not None:
        save_grid(files.grid, result["grid"])
    write_metrics(files.metrics, values, [ref for _, ref in spaces], len(seeds), **about)
    return values


def evaluate_snapshot(plan: EvalPlan, run_dir: str, record: str | None, world: World) -> list[str]:
    """Evaluate ``run_dir``'s snapshot at ``plan.kimg`` at every point of ``plan`` not yet up to date.

    Writes the record (``evaluated.json``) on rank 0 when every point is done; returns the points computed.
    """
    from fdm.metrics.features import open_network
    from fdm.snapshot import load_denoiser

    snapshot = paths.snapshot(run_dir, plan.kimg)
    digest = file_sha256(snapshot) if Path(snapshot).is_file() else None
    if digest is not None:
        check_trained(run_dir, plan.kimg, snapshot, digest)
    denoiser, _ = load_denoiser(snapshot, world.device)
    shape = (denoiser.img_resolution, denoiser.img_resolution, denoiser.img_channels)

    def make_extractor(ref, path):
        if ref.extractor not in plan.networks:
            raise FdmError(f"{path}: {ref.extractor} statistics, but the plan has no {ref.extractor} network")
        return open_network(ref.extractor, ref.mode, plan.networks[ref.extractor], world.device)

    spaces = open_spaces(plan.stats, make_extractor, shape)
    refs = [ref for _, ref in spaces]
    keys = [metric_name(kind, r.extractor, r.mode) for r in refs for kind in ("fid", "kid")]
    seeds, code = parse_seeds(plan.seeds), code_version("evaluate")
    todo, points = [], {}
    for sampler, nfe_value in plan.points:
        about = provenance(snapshot, digest, sampler, nfe_value, seeds)
        files = PointFiles.inside(paths.point(run_dir, plan.kimg, sampler, nfe_value), plan.keep_samples)
        points[f"{sampler}-{nfe_value}"] = files
        if not up_to_date(files, metrics_record({}, refs, len(seeds), **about), keys, code["source_sha256"]):
            todo.append((about, files))
    for about, files in todo:
        evaluate_point(denoiser, spaces, seeds, about, files, world, plan.batch)
        fault_point("evaluate:after_point", files.metrics)
    if world.is_main and record is not None:
        entries = {}
        for name, files in points.items():
            values = json.loads(Path(files.metrics).read_text(encoding="utf-8"))
            entries[name] = {**{k: values[k] for k in keys}, "metrics_sha256": file_sha256(files.metrics)}
        summary = {
            "snapshot": snapshot, "snapshot_sha256": digest, "kimg": plan.kimg, "points": entries, "code": code,
        }  # fmt: skip
        atomic_write_text(record, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return [f"{about['sampler']}-{about['nfe']}" for about, _ in todo]
