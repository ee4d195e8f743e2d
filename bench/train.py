"""Training throughput and peak memory of the real training step (``fdm.training``), not a test.

Measures images/s of full optimizer steps (per-sample draws, augmentation, forward, backward,
gradient clean-up, Adam, EMA) on random data of the right shape, for two networks:

- small: DDPM++ with model_channels 32, channel_mult (1, 2), 4 blocks, 16x16 grayscale (the digits
  profile's scale), batch 64;
- cifar: the paper's CIFAR-10 DDPM++ (128 channels, channel_mult (2, 2, 2), 4 blocks, attention at
  16x16, 10 classes, dropout 0.13, augmentation 0.12), batch 8 on a CPU (change with --cifar-batch).

Usage: python bench/train.py [--which small,cifar] [--device cpu|cuda] [--precision fp32|bf16]
[--threads N] [--steps N]. Peak memory is the process's peak RSS on the CPU (it includes PyTorch
itself) and ``torch.cuda.max_memory_allocated`` on a GPU.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fdm.data.archive import Item, write_archive
from fdm.distributed import join
from fdm.training import TrainConfig
from fdm.training.loop import TrainingRun, peak_memory_gb
from fdm.training.numerics import configure_numerics

NETWORKS = {
    "small": dict(
        resolution=16,
        channels=1,
        classes=0,
        config=dict(
            model_channels=32,
            channel_mult=(1, 2),
            num_blocks=4,
            attn_resolutions=(16,),
            dropout=0.0,
            augment_p=0.0,
        ),
    ),
    "cifar": dict(
        resolution=32,
        channels=3,
        classes=10,
        config=dict(
            model_channels=128,
            channel_mult=(2, 2, 2),
            num_blocks=4,
            attn_resolutions=(16,),
            dropout=0.13,
            augment_p=0.12,
            cond=True,
        ),
    ),
}


def random_dataset(path: Path, resolution: int, channels: int, classes: int, count: int = 256) -> Path:
    rng = np.random.default_rng(0)
    shape = (resolution, resolution, channels)
    items = (
        Item(f"random {i}", rng.integers(0, 256, shape, dtype=np.uint8), i % classes if classes else None)
        for i in range(count)
    )
    write_archive(path, items, total=count, desc="random data")
    return path


def measure(name: str, batch: int, args, workdir: Path) -> dict:
    spec = NETWORKS[name]
    data = random_dataset(workdir / f"{name}.zip", spec["resolution"], spec["channels"], spec["classes"])
    cfg = TrainConfig(
        dataset=str(data),
        outdir=str(workdir / name),
        formulation="edm",
        batch=batch,
        lr=1e-3,
        lr_rampup_kimg=0.0,
        device=args.device,
        precision=args.precision,
        threads=args.threads,
        progress=False,
        **spec["config"],
    )
    configure_numerics(cfg.deterministic, cfg.tf32)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = TrainingRun(cfg, join(cfg.device))
    parameters = sum(p.numel() for p in run.net.parameters())
    for _ in range(args.warmup):
        run.optimizer_step()
    synchronize = torch.cuda.synchronize if run.device.type == "cuda" else (lambda: None)
    synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        run.optimizer_step()
    synchronize()
    elapsed = time.perf_counter() - start
    return {
        "network": name,
        "parameters_M": parameters / 1e6,
        "batch": batch,
        "device": str(run.device) if run.device.type == "cpu" else torch.cuda.get_device_name(run.device),
        "precision": args.precision,
        "threads": torch.get_num_threads(),
        "images_per_s": batch * args.steps / elapsed,
        "peak_memory_gb": peak_memory_gb(run.device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--which", default="small,cifar")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--small-batch", type=int, default=64)
    parser.add_argument("--cifar-batch", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.which.split(","):
            batch = args.small_batch if name == "small" else args.cifar_batch
            result = measure(name, batch, args, Path(tmp))
            print(
                f"{result['network']:6s} {result['parameters_M']:6.2f}M params  batch {result['batch']:4d}  "
                f"{result['device']} {result['precision']} threads {result['threads']}: "
                f"{result['images_per_s']:8.1f} images/s  peak memory {result['peak_memory_gb']:.2f} GB",
                flush=True,
            )


if __name__ == "__main__":
    main()
