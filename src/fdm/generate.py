"""Seeded image generation from a snapshot, and the combined sample-and-score evaluation (paper.md section 4).

Protocol, as the reference's ``generate.py``: one ``torch.Generator`` per seed; each generator draws the
latent first and then, for a class-conditional model, the class (``randint(label_dim)``); images are
quantised as uint8 = clip(x * 127.5 + 128, 0, 255), truncated. Generators live on the CPU, so an image
depends only on its seed, not on the batch size, the number of processes or where the network runs.

Samples go to one ``.npz`` file (uint8 images [N, H, W, C], seeds, labels, provenance) and a grid PNG, not
to tens of thousands of PNGs. Under ``torchrun`` each rank takes ``seeds[rank::world]`` and rank 0
gathers and writes. ``evaluate`` samples and scores in one pass without keeping the images, for the
paper's 50,000-image evaluations.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np
import torch
from tqdm import tqdm

from fdm.atomic import atomic_write
from fdm.errors import FdmError
from fdm.metrics.cli import extractor_options, open_extractor
from fdm.metrics.features import file_sha256
from fdm.metrics.scores import score, write_metrics
from fdm.metrics.stats import check_matches, load_stats
from fdm.sampling import SAMPLERS, nfe, randn, sample, seed_generators, steps_for_nfe
from fdm.snapshot import load_denoiser

NO_LABEL = -1  # The label stored for images of unconditional models.


# Seeds ---------------------------------------------------------------------------------------------


def parse_seeds(spec: str) -> list[int]:
    """Seeds from a comma-separated list of integers and inclusive ranges: ``"0-49999"``, ``"1,5,10-19"``."""
    seeds = []
    for part in spec.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if match is None:
            raise FdmError(
                f"bad seed list {spec!r}: expected integers and ranges such as 0-49999 or 1,5,10-19"
            )
        first, last = int(match[1]), int(match[2] if match[2] is not None else match[1])
        if last < first:
            raise FdmError(f"bad seed range {part.strip()!r}: the end is below the start")
        seeds.extend(range(first, last + 1))
    if len(set(seeds)) != len(seeds):
        raise FdmError(f"seed list {spec!r} repeats seeds")
    return seeds


def format_seeds(seeds: Sequence[int]) -> str:
    """The shortest spec that ``parse_seeds`` reads back as ``seeds``: runs become ``a-b``."""
    parts, start = [], 0
    for i in range(1, len(seeds) + 1):
        if i == len(seeds) or seeds[i] != seeds[i - 1] + 1:
            first, last = seeds[start], seeds[i - 1]
            parts.append(str(first) if first == last else f"{first}-{last}")
            start = i
    return ",".join(parts)


# Sampling ------------------------------------------------------------------------------------------


def quantize(images: torch.Tensor) -> np.ndarray:
    """Float images [N, C, H, W] in [-1, 1] to uint8 [N, H, W, C]: clip(x * 127.5 + 128, 0, 255), truncated."""
    pixels = (images * 127.5 + 128).clip(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


def class_labels(generators: Sequence[torch.Generator], label_dim: int) -> torch.Tensor:
    """One class index per generator, each drawn from its own generator (after its latent)."""
    return torch.stack([torch.randint(label_dim, size=[], generator=g, device=g.device) for g in generators])


def generate(
    denoiser,
    seeds: Sequence[int],
    sampler: str,
    num_steps: int,
    batch_size: int = 64,
    progress: bool = False,
    **sample_options,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(seeds, images, labels)`` per batch: int64 [n], uint8 [n, H, W, C], int64 [n] (-1: none).

    Images run on the denoiser's device; the noise and classes come from CPU generators, one per seed.
    """
    device = next(denoiser.parameters()).device
    shape = [denoiser.img_channels, denoiser.img_resolution, denoiser.img_resolution]
    batches = [seeds[i : i + batch_size] for i in range(0, len(seeds), batch_size)]
    for batch in tqdm(batches, desc=f"{sampler} x{num_steps}", unit="batch", disable=not progress):
        generators = seed_generators(batch, "cpu")
        latents = randn(generators, [len(batch), *shape], device=device)
        onehot, labels = None, np.full(len(batch), NO_LABEL, dtype=np.int64)
        if denoiser.label_dim:
            classes = class_labels(generators, denoiser.label_dim)
            onehot = torch.nn.functional.one_hot(classes, denoiser.label_dim).to(device, torch.float32)
            labels = classes.numpy().astype(np.int64)
        images = sample(
            denoiser,
            latents,
            sampler,
            num_steps,
            class_labels=onehot,
            generators=generators,
            **sample_options,
        )
        yield np.asarray(batch, dtype=np.int64), quantize(images), labels


# Several processes (torchrun) ----------------------------------------------------------------------


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 without torch.distributed)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def gather(obj):
    """The list of every rank's ``obj`` on rank 0 (None elsewhere); ``[obj]`` in a single process."""
    rank, world = rank_and_world()
    if world == 1:
        return [obj]
    gathered = [None] * world if rank == 0 else None
    torch.distributed.gather_object(obj, gathered, dst=0)
    return gathered


def shard(seeds: Sequence[int]) -> list[int]:
    """This rank's seeds, ``seeds[rank::world]``; every rank must get at least one."""
    rank, world = rank_and_world()
    if len(seeds) < world:
        raise FdmError(f"{len(seeds)} seeds cannot be shared among {world} processes")
    return list(seeds)[rank::world]


def generate_all(
    denoiser,
    seeds: Sequence[int],
    sampler: str,
    num_steps: int,
    batch_size: int = 64,
    progress: bool = False,
    **sample_options,
):
    """All images of ``seeds`` in seed order on rank 0 (None elsewhere): ``(seeds, images, labels)``.

    Each rank generates ``shard(seeds)``; rank 0 gathers the shards and restores the order.
    """
    rank, _ = rank_and_world()
    progress = progress and rank == 0
    parts = list(generate(denoiser, shard(seeds), sampler, num_steps, batch_size, progress, **sample_options))
    shards = gather(parts)
    if rank != 0:
        return None
    parts = [part for shard in shards for part in shard]
    order = {seed: i for i, seed in enumerate(seeds)}
    all_seeds, images, labels = (np.concatenate(column) for column in zip(*parts, strict=True))
    index = np.argsort([order[seed] for seed in all_seeds], kind="stable")
    return all_seeds[index], images[index], labels[index]


# Sample files --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Samples:
    """Generated images with their seeds, labels (-1: unconditional) and provenance."""

    images: np.ndarray  # uint8 [N, H, W, C]
    seeds: np.ndarray  # int64 [N]
    labels: np.ndarray  # int64 [N]
    meta: dict = field(default_factory=dict)  # sampler, num_steps, nfe, snapshot, snapshot_sha256


def save_samples(path: str | os.PathLike, samples: Samples) -> None:
    """Write ``samples`` to one ``.npz`` file atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(
                f,
                images=samples.images,
                seeds=samples.seeds,
                labels=samples.labels,
                meta=np.str_(json.dumps(samples.meta, sort_keys=True)),
            )

    atomic_write(path, write)


def check_images(images: np.ndarray, source: str) -> np.ndarray:
    """Refuse anything but uint8 square images [N, H, W, C] with C = 1 or 3 and N >= 1."""
    if images.dtype != np.uint8:
        raise FdmError(f"{source}: images must be uint8, got {images.dtype}")
    if (
        images.ndim != 4
        or images.shape[0] < 1
        or images.shape[1] != images.shape[2]
        or images.shape[3] not in (1, 3)
    ):
        raise FdmError(
            f"{source}: images must be [N, H, W, C] with H = W and C = 1 or 3, got {list(images.shape)}"
        )
    return images


def load_samples(path: str | os.PathLike) -> Samples:
    """Read a sample file: our ``.npz``, or a bare ``.npy`` uint8 array [N, H, W, C] from elsewhere."""
    path = Path(path)
    if not path.is_file():
        raise FdmError(f"sample file {path} does not exist")
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.ndarray):
            images, seeds, labels, meta = data, None, None, {}
        else:
            with data:
                images, seeds, labels = data["images"], data["seeds"], data["labels"]
                meta = json.loads(str(data["meta"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise FdmError(f"{path} is not a sample file written by `fdm sample` ({err})") from None
    images = check_images(images, str(path))
    count = len(images)
    if seeds is None:
        seeds = labels = np.full(count, NO_LABEL, dtype=np.int64)
    if seeds.shape != (count,) or labels.shape != (count,):
        raise FdmError(f"{path}: {count} images but {seeds.shape} seeds and {labels.shape} labels")
    return Samples(images, seeds, labels, meta)


def save_grid(path: str | os.PathLike, images: np.ndarray, max_images: int = 64) -> None:
    """A square-ish grid PNG of the first ``max_images`` uint8 images [N, H, W, C], for people."""
    from torchvision.utils import save_image

    images = torch.from_numpy(images[:max_images]).permute(0, 3, 1, 2).float() / 255
    nrow = math.ceil(math.sqrt(len(images)))
    atomic_write(path, lambda tmp: save_image(images, tmp, nrow=nrow, padding=1, format="png"))


# Sample and score in one pass ------------------------------------------------------------------------


def evaluate(
    denoiser,
    seeds: Sequence[int],
    sampler: str,
    num_steps: int,
    extractor,
    ref,
    batch_size: int = 64,
    progress: bool = False,
    grid_images: int = 64,
    **sample_options,
):
    """FID and KID of the images of ``seeds`` against ``ref``, without keeping the images.

    Each rank embeds its shard batch by batch; rank 0 gathers the features, puts them in seed order (so
    KID's random subsets do not depend on the number of processes) and returns ``(values, grid)``, where
    ``grid`` holds rank 0's first ``grid_images`` images. Other ranks return None.
    """
    image_shape = (denoiser.img_resolution, denoiser.img_resolution, denoiser.img_channels)
    check_matches(ref, extractor, image_shape)
    rank, _ = rank_and_world()
    progress = progress and rank == 0
    shard_seeds, features, grid = [], [], []
    for batch_seeds, images, _ in generate(
        denoiser, shard(seeds), sampler, num_steps, batch_size, progress, **sample_options
    ):
        shard_seeds.append(batch_seeds)
        features.append(extractor(images))
        grid.extend(images[: grid_images - len(grid)])
    shards = gather((np.concatenate(shard_seeds), np.concatenate(features)))
    if rank != 0:
        return None
    order = {seed: i for i, seed in enumerate(seeds)}
    all_seeds, all_features = (np.concatenate(column) for column in zip(*shards, strict=True))
    all_features = all_features[np.argsort([order[seed] for seed in all_seeds], kind="stable")]
    return score(all_features, ref), np.stack(grid)


# Command line --------------------------------------------------------------------------------------


def resolve_device(name: str | None) -> torch.device:
    """``name`` as a device, defaulting to CUDA when there is one; asking for absent CUDA is an error."""
    device = torch.device(name if name else "cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FdmError(f"--device {name} was asked for, but this machine has no CUDA device")
    return device


@contextlib.contextmanager
def processes(device_name: str | None) -> Iterator[torch.device]:
    """This rank's device; under ``torchrun`` (WORLD_SIZE > 1) inside a process group closed on exit."""
    device = resolve_device(device_name)
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        yield device
        return
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield device
    finally:
        torch.distributed.destroy_process_group()


def _steps(sampler: str, steps: int | None, nfe_value: int | None) -> tuple[int, int]:
    """``(num_steps, nfe)`` from exactly one of --steps and --nfe."""
    if (steps is None) == (nfe_value is None):
        raise FdmError("give exactly one of --steps and --nfe")
    try:
        num_steps = steps if steps is not None else steps_for_nfe(sampler, nfe_value)
        return num_steps, nfe(sampler, num_steps)
    except ValueError as err:
        raise FdmError(str(err)) from None


def _load(snapshot: str, device: torch.device, sampler: str, steps: int | None, nfe_value: int | None):
    """The denoiser of ``snapshot`` plus the provenance every output of it records."""
    num_steps, nfe_value = _steps(sampler, steps, nfe_value)
    denoiser, _ = load_denoiser(snapshot, device)
    provenance = {
        "sampler": sampler,
        "num_steps": num_steps,
        "nfe": nfe_value,
        "snapshot": str(snapshot),
        "snapshot_sha256": file_sha256(snapshot),
    }
    return denoiser, provenance


def _sampling_options(func):
    """The options `fdm sample` and `fdm evaluate` share."""
    options = [
        click.option(
            "--snapshot", required=True, type=click.Path(dir_okay=False), help="Snapshot (.safetensors)."
        ),
        click.option("--sampler", type=click.Choice(SAMPLERS), default="heun", show_default=True),
        click.option("--steps", type=click.IntRange(min=1), help="Number of steps (or give --nfe)."),
        click.option(
            "--nfe", "nfe_value", type=click.IntRange(min=1), help="Denoiser evaluations per image."
        ),
        click.option("--seeds", default="0-63", show_default=True, help="Seeds, e.g. 0-49999 or 1,5,10-19."),
        click.option("--batch", "batch_size", type=click.IntRange(min=1), default=64, show_default=True),
        click.option("--device", help="cpu, cuda, cuda:1 ... [default: cuda if available, else cpu]"),
        click.option(
            "--grid", type=click.Path(dir_okay=False), help="Also write a grid PNG of the first 64 images."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.command("sample")
@_sampling_options
@click.option("--dest", required=True, type=click.Path(dir_okay=False), help="Sample file to write (.npz).")
def sample_command(snapshot, sampler, steps, nfe_value, seeds, batch_size, device, grid, dest):
    """Generate images of a snapshot, one per seed, into one uint8 .npz file.

    \b
    fdm sample --snapshot runs/digits/edm/snapshots/000100.safetensors \\
        --sampler heun --nfe 35 --seeds 0-255 --dest samples.npz --grid grid.png
    torchrun --standalone --nproc-per-node 4 $(which fdm) sample ...   # several GPUs
    """
    seed_list = parse_seeds(seeds)
    with processes(device) as device:
        denoiser, provenance = _load(snapshot, device, sampler, steps, nfe_value)
        result = generate_all(
            denoiser, seed_list, sampler, provenance["num_steps"], batch_size=batch_size, progress=True
        )
    if result is None:
        return
    seed_array, images, labels = result
    save_samples(dest, Samples(images, seed_array, labels, {**provenance, "seeds": format_seeds(seed_list)}))
    if grid:
        save_grid(grid, images)
    click.echo(f"wrote {len(images)} images to {dest}")


@click.command("evaluate")
@_sampling_options
@extractor_options
@click.option("--stats", required=True, type=click.Path(dir_okay=False), help="Reference statistics (.npz).")
@click.option("--dest", required=True, type=click.Path(dir_okay=False), help="metrics.json to write.")
def evaluate_command(
    snapshot, sampler, steps, nfe_value, seeds, batch_size, device, grid, extractor, mode, featnet, inception_dir,
    stats, dest,
):  # fmt: skip
    """Sample and score in one pass, keeping no images: FID and KID into metrics.json.

    \b
    fdm evaluate --snapshot runs/digits/edm/snapshots/000100.safetensors --sampler dpmpp_3s --nfe 10 \\
        --seeds 0-1999 --extractor digitsnet --featnet data/digitsnet.pt \\
        --stats data/digits.digitsnet.stats.npz --dest metrics.json --grid grid.png
    """
    ref = load_stats(stats)
    seed_list = parse_seeds(seeds)
    with processes(device) as device:
        feature_extractor = open_extractor(extractor, mode, device, featnet, inception_dir)
        denoiser, provenance = _load(snapshot, device, sampler, steps, nfe_value)
        result = evaluate(
            denoiser, seed_list, sampler, provenance["num_steps"], feature_extractor, ref,
            batch_size=batch_size, progress=True,
        )  # fmt: skip
    if result is None:
        return
    values, grid_images = result
    write_metrics(dest, values, ref, len(seed_list), seeds=format_seeds(seed_list), **provenance)
    if grid:
        save_grid(grid, grid_images)
    click.echo(" ".join(f"{name}={value:.6g}" for name, value in values.items()))
