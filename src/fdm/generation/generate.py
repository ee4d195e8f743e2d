"""Seeded image generation from a denoiser: the protocol of the authors' ``generate.py``, batch by batch.

One ``torch.Generator`` per seed; each generator draws the latent first and then, for a
class-conditional model, the class (``randint(label_dim)``); images are quantised to uint8 as
clip(x * 127.5 + 128, 0, 255), truncated (``fdm.samples.quantize``). Generators live on the CPU, so an
image depends only on its seed, not on the batch size, the number of processes or where the network
runs. Under ``torchrun`` each rank takes ``seeds[rank::world]`` and rank 0 gathers the results.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from fdm.distributed import World, gather, shard
from fdm.samples import NO_LABEL, quantize
from fdm.sampling import randn, sample, seed_generators

SINGLE = World(rank=0, size=1, device=torch.device("cpu"))  # No process group: rank 0 of 1.


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
        with torch.inference_mode():  # no autograd bookkeeping at all: the same numbers, sooner
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
            pixels = quantize(images)
        yield np.asarray(batch, dtype=np.int64), pixels, labels


def generate_all(
    denoiser,
    seeds: Sequence[int],
    sampler: str,
    num_steps: int,
    world: World = SINGLE,
    batch_size: int = 64,
    progress: bool = False,
    extractors: Sequence = (),
    keep_images: bool = True,
    grid_images: int = 64,
    **sample_options,
) -> dict | None:
    """Generate the images of ``seeds`` over the processes of ``world``; on rank 0 return them in seed order.

    Each rank generates its shard batch by batch and embeds each batch with every one of ``extractors``
    on the spot (so the paper's 50,000 images never have to be held). Rank 0 gathers and returns a dict:
    ``seeds``, ``labels``, ``features`` (one float32 array [N, D] per extractor, in seed order, so KID's
    random subsets do not depend on the number of processes), ``images`` (uint8 [N, H, W, C], or None
    without ``keep_images``) and ``grid`` (rank 0's first ``grid_images`` images). Other ranks get None.
    """
    parts, grid = [], []
    for batch_seeds, images, labels in generate(
        denoiser, shard(seeds, world), sampler, num_steps, batch_size, progress and world.is_main,
        **sample_options,
    ):  # fmt: skip
        features = [extractor(images) for extractor in extractors]
        parts.append((batch_seeds, labels, images if keep_images else None, features))
        grid.extend(images[: grid_images - len(grid)])
    shards = gather(parts, world)
    if not world.is_main:
        return None
    parts = [part for one in shards for part in one]
    order = {seed: i for i, seed in enumerate(seeds)}
    all_seeds = np.concatenate([part[0] for part in parts])
    index = np.argsort([order[seed] for seed in all_seeds], kind="stable")
    return {
        "seeds": all_seeds[index],
        "labels": np.concatenate([part[1] for part in parts])[index],
        "features": [np.concatenate([part[3][i] for part in parts])[index] for i in range(len(extractors))],
        "images": np.concatenate([part[2] for part in parts])[index] if keep_images else None,
        "grid": np.stack(grid),
    }
