"""Sampling throughput: images/s of Heun at NFE 35 and DPM-Solver++ (dpmpp_3s) at NFE 10 with the small network.

The network is the smoke profile's size (DDPM++, model_channels 32, channel_mult (1, 2), 16x16x1) with
random weights: throughput does not depend on what the weights are. Run from the project root:

    .venv/bin/python bench/sample.py [--batch 32] [--images 64] [--device cpu] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch

from fdm.diffusion import Denoiser, formulation
from fdm.generate import generate
from fdm.nets import build
from fdm.sampling import steps_for_nfe

CASES = (("heun", 35), ("dpmpp_3s", 10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="images per batch")
    parser.add_argument("--images", type=int, default=64, help="images per sampler (after one warm-up batch)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads [default: torch's]")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = build("ddpmpp", 16, 1, model_channels=32, channel_mult=(1, 2))
    denoiser = Denoiser(net, formulation("edm")).eval().requires_grad_(False).to(args.device)
    print(
        f"device {args.device}, {torch.get_num_threads()} threads, batch {args.batch}, {args.images} images"
    )
    for sampler, nfe in CASES:
        num_steps = steps_for_nfe(sampler, nfe)
        for _ in generate(denoiser, list(range(args.batch)), sampler, num_steps, args.batch):
            pass  # Warm-up.
        seeds = list(range(args.batch, args.batch + args.images))
        start = time.perf_counter()
        for _ in generate(denoiser, seeds, sampler, num_steps, args.batch):
            pass
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        print(f"{sampler:9s} NFE {nfe:3d} ({num_steps} steps): {args.images / seconds:8.2f} images/s")


if __name__ == "__main__":
    main()
