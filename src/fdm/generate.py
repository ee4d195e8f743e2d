"""Seeded image generation from a snapshot, and the combined sample-and-score evaluation (paper.md section 4).

Protocol, as the reference's ``generate.py``: one ``torch.Generator`` per seed; each generator draws the
latent first and then, for a class-conditional model, the class (``randint(label_dim)``); images are
quantised as uint8 = clip(x * 127.5 + 128, 0, 255), truncated. Generators live on the CPU, so an image
depends only on its seed, not on the batch size, the number of processes or where the network runs.

Samples go to one ``.npz`` file (uint8 images [N, H, W, C], seeds, labels, provenance) and a grid PNG, not
to tens of thousands of PNGs. Under ``torchrun`` each rank takes ``seeds[rank::world]`` and rank 0
gathers and writes. ``evaluate`` samples once and scores in every feature space asked for (the paper's
two Inception modes) without keeping the images unless asked, for the paper's 50,000-image evaluations.
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
from fdm.digest import file_sha256
from fdm.errors import FdmError
from fdm.metrics.features import DIGITSNET_MODE, EXTRACTORS, INCEPTION_MODES, build_extractor
from fdm.metrics.scores import measure_name, score, write_metrics
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


def embed_samples(
    denoiser,
    seeds: Sequence[int],
    sampler: str,
    num_steps: int,
    extractors: Sequence,
    batch_size: int = 64,
    progress: bool = False,
    grid_images: int = 64,
    keep_images: bool = False,
    **sample_options,
):
    """Sample the images of ``seeds`` once and embed every batch with each of ``extractors``.

    Each rank embeds its shard batch by batch; rank 0 gathers and returns ``(features, grid, samples)``:
    one float32 array [N, D] per extractor in seed order (so KID's random subsets do not depend on the
    number of processes), rank 0's first ``grid_images`` images, and with ``keep_images`` all images as
    ``(seeds, images, labels)`` in seed order (else None). Other ranks return None.
    """
    rank, _ = rank_and_world()
    progress = progress and rank == 0
    parts, grid = [], []
    for batch_seeds, images, labels in generate(
        denoiser, shard(seeds), sampler, num_steps, batch_size, progress, **sample_options
    ):
        features = [extractor(images) for extractor in extractors]
        parts.append((batch_seeds, labels, images if keep_images else None, features))
        grid.extend(images[: grid_images - len(grid)])
    shards = gather(parts)
    if rank != 0:
        return None
    parts = [part for shard in shards for part in shard]
    order = {seed: i for i, seed in enumerate(seeds)}
    all_seeds = np.concatenate([part[0] for part in parts])
    index = np.argsort([order[seed] for seed in all_seeds], kind="stable")
    features = [np.concatenate([part[3][i] for part in parts])[index] for i in range(len(extractors))]
    samples = None
    if keep_images:
        labels, images = (np.concatenate([part[column] for part in parts])[index] for column in (1, 2))
        samples = (all_seeds[index], images, labels)
    return features, np.stack(grid), samples


def evaluate(
    denoiser, seeds: Sequence[int], sampler: str, num_steps: int, spaces: Sequence[tuple], **options
):
    """FID and KID of the images of ``seeds`` in every feature space of ``spaces``, sampling once.

    ``spaces`` pairs each extractor with the reference statistics of its space (the paper's two Inception
    modes: two pairs); ``options`` go to ``embed_samples``. Returns ``(values, grid, samples)`` on rank 0,
    ``values`` holding every space's metrics, and None on other ranks.
    """
    image_shape = (denoiser.img_resolution, denoiser.img_resolution, denoiser.img_channels)
    for extractor, ref in spaces:
        check_matches(ref, extractor, image_shape)
    result = embed_samples(denoiser, seeds, sampler, num_steps, [e for e, _ in spaces], **options)
    if result is None:
        return None
    features, grid, samples = result
    values = {}
    for space_features, (_, ref) in zip(features, spaces, strict=True):
        values.update(score(space_features, ref))
    return values, grid, samples


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
@click.option(
    "--stats",
    required=True,
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Reference statistics (.npz); repeat it to score several feature spaces from one sampling pass.",
)
@click.option(
    "--extractor",
    type=click.Choice(EXTRACTORS),
    help="Only accept statistics of this extractor [default: the statistics name their own].",
)
@click.option(
    "--mode",
    type=click.Choice((*INCEPTION_MODES, DIGITSNET_MODE)),
    help="Only accept statistics of this mode [default: the statistics name their own].",
)
@click.option("--featnet", type=click.Path(dir_okay=False), help="Digits feature network (fdm featnet).")
@click.option(
    "--inception-dir",
    type=click.Path(file_okay=False),
    help="Folder of inception-2015-12-05.pt [default: $FDM_INCEPTION_DIR or ~/.cache/fdm].",
)
@click.option("--dest", required=True, type=click.Path(dir_okay=False), help="metrics.json to write.")
@click.option(
    "--samples",
    "samples_path",
    type=click.Path(dir_okay=False),
    help="Also keep the images as a sample file (.npz) that `fdm fid` can score again.",
)
def evaluate_command(
    snapshot, sampler, steps, nfe_value, seeds, batch_size, device, grid, stats, extractor, mode, featnet,
    inception_dir, dest, samples_path,
):  # fmt: skip
    """Sample once and score in every feature space of the --stats files: FID and KID into metrics.json.

    Each statistics file names its extractor and mode; one extractor per file embeds every batch, so the
    paper's two Inception modes cost one sampling pass. No images are kept unless --samples is given.

    \b
    fdm evaluate --snapshot runs/digits/edm/snapshots/000100.safetensors --sampler dpmpp_3s --nfe 10 \\
        --seeds 0-1999 --featnet data/digitsnet.pt \\
        --stats data/stats/digits/digitsnet.npz --dest metrics.json --grid grid.png
    fdm evaluate --snapshot runs/cifar10/edm/snapshots/200000.safetensors --nfe 35 --seeds 0-49999 \\
        --inception-dir data/inception --stats data/stats/cifar10/inception_clean.npz \\
        --stats data/stats/cifar10/inception_legacy_tensorflow.npz --dest metrics.json
    """
    refs = [load_stats(path) for path in stats]
    check_spaces(refs, stats, extractor, mode)
    seed_list = parse_seeds(seeds)
    with processes(device) as device:
        spaces = [
            (build_extractor(ref.extractor, ref.mode, device, featnet, inception_dir), ref) for ref in refs
        ]
        denoiser, provenance = _load(snapshot, device, sampler, steps, nfe_value)
        result = evaluate(
            denoiser, seed_list, sampler, provenance["num_steps"], spaces,
            batch_size=batch_size, progress=True, keep_images=samples_path is not None,
        )  # fmt: skip
    if result is None:
        return
    values, grid_images, kept = result
    provenance = {**provenance, "seeds": format_seeds(seed_list)}
    if kept is not None:
        save_samples(samples_path, Samples(kept[1], kept[0], kept[2], provenance))
    write_metrics(dest, values, refs, len(seed_list), **provenance)
    if grid:
        save_grid(grid, grid_images)
    click.echo(" ".join(f"{name}={value:.6g}" for name, value in values.items()))


def check_spaces(refs, paths: Sequence[str], extractor: str | None, mode: str | None) -> None:
    """Refuse two statistics files of one feature space, or any outside --extractor/--mode when given."""
    seen = {}
    for ref, path in zip(refs, paths, strict=True):
        space = measure_name(ref.extractor, ref.mode)
        if space in seen:
            raise FdmError(
                f"{seen[space]} and {path} are both {space} statistics; give one per feature space"
            )
        seen[space] = path
        if (extractor or ref.extractor, mode or ref.mode) != (ref.extractor, ref.mode):
            raise FdmError(
                f"reference statistics {path} were computed with {ref.extractor}/{ref.mode}, "
                f"not the requested {extractor or ref.extractor}/{mode or ref.mode}"
            )
