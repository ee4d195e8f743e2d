"""Sampling throughput: images/s of every sampler (heun, euler, dpmpp_3s, dpmpp_2m) at a set of NFEs.

The network is a profile's digits network (default: config/study.yaml's edm, DDPM++ 16 channels,
channel_mult (1, 2), 1 block, 16x16x1, class-conditional) with random weights, or a trained
snapshot's (``--snapshot``): throughput does not depend on what the weights are. Each (sampler, NFE)
runs one untimed warm-up batch, then ``--images`` images through ``fdm.generation.generate.generate``, the path
``fdm sample`` and ``fdm evaluate`` take (per-seed generators, float64 integration, uint8 quantising).

    .venv/bin/python bench/sample.py                                   # CPU, 1 thread as pipeline jobs
    .venv/bin/python bench/sample.py --threads 2 --nfe 5,15,35 --images 512
    .venv/bin/python bench/sample.py --device cuda --batch 1024 --images 8192
    .venv/bin/python bench/sample.py --params config/smoke.yaml --variant ve

An NFE a sampler cannot make (Heun's NFE is 2N - 1, so it is odd) is skipped and printed as "-".
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from fdm.config import load_params
from fdm.diffusion import Denoiser, formulation
from fdm.distributed import resolve_device
from fdm.generation.generate import generate
from fdm.nets import build
from fdm.sampling import SAMPLERS, steps_for_nfe
from fdm.snapshot import load_denoiser
from fdm.training import TrainConfig
from fdm.training.loop import network_config

ROOT = Path(__file__).resolve().parents[1]
DIGIT_CLASSES = 10


def profile_denoiser(params: Path, variant: str, dataset: str | None = None) -> tuple[Denoiser, str]:
    """A random-weight denoiser of ``variant``'s network in the profile ``params`` (its first dataset)."""
    p = load_params(params)
    dataset = dataset or next(iter(p.datasets))
    spec = p.datasets[dataset]
    cfg = TrainConfig(dataset="", outdir="", **p.train_config(dataset, variant, 0))
    shape = SimpleNamespace(
        resolution=spec.resolution, channels=spec.channels, label_dim=DIGIT_CLASSES if spec.cond else 0
    )
    kwargs = network_config(cfg, shape)
    torch.manual_seed(0)
    net = build(**kwargs)
    denoiser = Denoiser(net, formulation(cfg.formulation, **cfg.formulation_options))
    describe = (
        f"{params} {variant}: {kwargs['arch']} {kwargs['model_channels']} ch, mult {kwargs['channel_mult']}, "
        f"{kwargs['num_blocks']} blocks, attention at {kwargs['attn_resolutions'] or 'none'}, "
        f"{spec.resolution}x{spec.resolution}x{spec.channels}, {sum(q.numel() for q in net.parameters()):,} "
        "parameters, random weights"
    )
    return denoiser, describe


def images_per_s(denoiser, sampler: str, num_steps: int, batch: int, images: int, device) -> float:
    """Images/s of ``generate`` over ``images`` seeds after one untimed warm-up batch."""
    for _ in generate(denoiser, list(range(batch)), sampler, num_steps, batch):
        pass
    seeds = list(range(batch, batch + images))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in generate(denoiser, seeds, sampler, num_steps, batch):
        pass  # each batch ends with a copy to the CPU (uint8), which synchronises
    return images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=ROOT / "config" / "study.yaml", help="profile")
    parser.add_argument("--variant", default="edm", help="the profile's variant whose network to time")
    parser.add_argument("--snapshot", type=Path, help="time a trained snapshot's network instead")
    parser.add_argument("--samplers", default=",".join(SAMPLERS), help="comma-separated")
    parser.add_argument("--nfe", default="5,15,35", help="comma-separated NFEs")
    parser.add_argument("--batch", type=int, default=128, help="images per batch (the study's eval.batch)")
    parser.add_argument("--images", type=int, default=256, help="timed images per (sampler, NFE)")
    parser.add_argument("--device", help="cpu, cuda ... [default: cuda if available, else cpu]")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (pipeline jobs use 1)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.snapshot:
        denoiser, _ = load_denoiser(args.snapshot, device)
        describe = f"snapshot {args.snapshot}"
    else:
        denoiser, describe = profile_denoiser(args.params, args.variant)
    denoiser = denoiser.eval().requires_grad_(False).to(device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {args.threads} threads"
    print(
        f"{describe}\n{where}, batch {args.batch}, {args.images} timed images, load {os.getloadavg()[0]:.2f}"
    )
    nfes = [int(n) for n in args.nfe.split(",")]
    print("| sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |")
    print("|---|" + "---|" * len(nfes))
    for sampler in args.samplers.split(","):
        cells = []
        for nfe in nfes:
            try:
                num_steps = steps_for_nfe(sampler, nfe)
            except ValueError:
                cells.append("-")
                continue
            rate = images_per_s(denoiser, sampler, num_steps, args.batch, args.images, device)
            cells.append(f"{rate:.1f}")
        print(f"| {sampler} | " + " | ".join(cells) + " |", flush=True)
    print(f"images/s; load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
