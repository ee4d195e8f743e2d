"""FID throughput: feature extraction images/s (digits network, Inception-v3) and the FID/KID time.

- digitsnet: the digits feature network through ``fdm.metrics.features.build_extractor`` (the path
  ``fdm ref-stats`` and ``fdm evaluate`` take), from a TorchScript file of ``fdm featnet``
  (``--featnet data/networks/digitsnet/digitsnet.pt``) or, by default, a random-weight ``DigitsNet`` of the same
  architecture saved the way ``fdm featnet`` saves it; 16x16x1 uint8 images.
- inception: FID's network architecture, Inception-v3 at 299x299 with its 2048-d pool features,
  built by torchvision with random weights (clean-fid's weights cannot be downloaded here; the
  compute is the same). Timed in two parts: clean-fid's "clean" resizer (16x16 grey -> 299x299 RGB,
  per image on the CPU, as ``fdm.metrics.features`` calls it) and the network's forward pass.
- FID and KID: ``fdm.metrics.scores.fid`` (moments of N features + the Frechet distance, a matrix
  square root) and ``kid`` (clean-fid's 100 subsets) of random features against random reference
  statistics, in 64 dimensions (digitsnet) and 2048 (Inception).

    .venv/bin/python bench/fid.py                                    # CPU, 1 thread as pipeline jobs
    .venv/bin/python bench/fid.py --featnet data/networks/digitsnet/digitsnet.pt --threads 2
    .venv/bin/python bench/fid.py --device cuda --inception-images 2048 --inception-batch 256 --samples 50000

numpy's BLAS (FID, KID) runs on ``--threads`` threads too (threadpoolctl).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from fdm.distributed import resolve_device
from fdm.metrics.featnet import DigitsNet, save_featnet
from fdm.metrics.features import build_extractor
from fdm.metrics.scores import fid, kid
from fdm.metrics.stats import embed, feature_moments

DIGITS_SHAPE = (16, 16, 1)
INCEPTION_RESOLUTION = 299
INCEPTION_DIM = 2048
DIGITS_COUNT = 1797  # the reference set of the digits profile (every image of the dataset)


def random_images(count: int, shape=DIGITS_SHAPE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, *shape), dtype=np.uint8)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def digitsnet_rate(featnet: Path | None, device: torch.device, images: int, batch: int) -> tuple[float, str]:
    """Images/s of the digits extractor over ``images`` images, after one untimed batch."""
    with tempfile.TemporaryDirectory() as tmp:
        if featnet is None:
            torch.manual_seed(0)
            featnet = Path(tmp) / "digitsnet.pt"
            save_featnet(featnet, DigitsNet(*DIGITS_SHAPE[::2]).eval(), {"note": "random weights"})
            source = "random-weight DigitsNet (TorchScript, as fdm featnet writes it)"
        else:
            source = str(featnet)
        extractor = build_extractor("digitsnet", device=device, featnet=featnet)
    data = random_images(images)
    embed(extractor, data[:batch], batch_size=batch)
    synchronize(device)
    start = time.perf_counter()
    embed(extractor, data, batch_size=batch)  # ends with a copy to the CPU, which synchronises
    return images / (time.perf_counter() - start), source


def inception_rates(device: torch.device, images: int, batch: int) -> tuple[float, float, float]:
    """Images/s of clean-fid's clean resizer, of Inception-v3's forward pass, and of both in turn."""
    from cleanfid.resize import build_resizer
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    net = inception_v3(weights=None, aux_logits=False, init_weights=False)
    net.fc = torch.nn.Identity()  # the 2048-d pool features FID uses
    net = net.eval().requires_grad_(False).to(device)
    resize = build_resizer("clean")
    grey = random_images(images)

    start = time.perf_counter()
    resized = [np.asarray(resize(np.repeat(image, 3, axis=-1)), dtype=np.float32) for image in grey]
    resize_s = time.perf_counter() - start
    batches = torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).split(batch)
    assert batches[0].shape[1:] == (3, INCEPTION_RESOLUTION, INCEPTION_RESOLUTION)

    with torch.inference_mode():
        assert net(batches[0].to(device)).shape[1] == INCEPTION_DIM  # warm-up
        synchronize(device)
        start = time.perf_counter()
        for chunk in batches:
            net(chunk.to(device)).cpu()
        forward_s = time.perf_counter() - start
    return images / resize_s, images / forward_s, images / (resize_s + forward_s)


def distance_seconds(dim: int, samples: int, reference: int, repeats: int) -> tuple[float, float]:
    """Median seconds of ``fid`` (moments + Frechet distance) and ``kid`` on random features."""
    rng = np.random.default_rng(0)
    mixing = rng.standard_normal((dim, dim)) / np.sqrt(dim)  # correlated features, a full covariance
    features = (rng.standard_normal((samples, dim)) @ mixing).astype(np.float32)
    ref_features = (rng.standard_normal((reference, dim)) @ mixing + 0.1).astype(np.float32)
    mu_ref, sigma_ref = feature_moments(ref_features)
    fid_s, kid_s = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        fid(features, mu_ref, sigma_ref)
        fid_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        kid(features, ref_features)
        kid_s.append(time.perf_counter() - start)
    return float(np.median(fid_s)), float(np.median(kid_s))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--featnet", type=Path, help="a digits feature network (fdm featnet) to time")
    parser.add_argument("--device", help="cpu, cuda ... [default: cuda if available, else cpu]")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads (pipeline jobs: 1)")
    parser.add_argument("--digits-images", type=int, default=8192)
    parser.add_argument("--digits-batch", type=int, default=256, help="fdm ref-stats' default batch")
    parser.add_argument("--inception-images", type=int, default=64)
    parser.add_argument("--inception-batch", type=int, default=32)
    parser.add_argument("--samples", type=int, default=10000, help="generated images' features for FID/KID")
    parser.add_argument("--inception-reference", type=int, default=50000, help="reference set for 2048-d")
    parser.add_argument("--repeats", type=int, default=3, help="FID/KID timings (the median is printed)")
    parser.add_argument(
        "--skip", default="", help="comma-separated parts to skip: digitsnet,inception,distance"
    )
    args = parser.parse_args()

    skip = set(filter(None, args.skip.split(",")))
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {args.threads} threads"
    print(f"{where}, load average {os.getloadavg()[0]:.2f}")
    print("| measure | images | batch | images/s |\n|---|---|---|---|")
    if "digitsnet" not in skip:
        rate, source = digitsnet_rate(args.featnet, device, args.digits_images, args.digits_batch)
        print(
            f"| digitsnet features, 16x16x1 ({source}) | {args.digits_images} | {args.digits_batch} | {rate:.0f} |"
        )
    if "inception" not in skip:
        n, b = args.inception_images, args.inception_batch
        resize, forward, both = inception_rates(device, n, b)
        print(f"| clean-fid 'clean' resize 16x16 grey -> 299x299 RGB (CPU, PIL) | {n} | - | {resize:.1f} |")
        print(f"| Inception-v3 forward, 299x299, random weights (torchvision) | {n} | {b} | {forward:.1f} |")
        print(f"| Inception features: resize + forward | {n} | {b} | {both:.1f} |", flush=True)
    if "distance" not in skip:
        print("\n| features | dim | N samples | N reference | FID s | KID s |\n|---|---|---|---|---|---|")
        with threadpool_limits(args.threads):
            for name, dim, reference in (
                ("digitsnet", 64, DIGITS_COUNT),
                ("inception", INCEPTION_DIM, args.inception_reference),
            ):
                fid_s, kid_s = distance_seconds(dim, args.samples, reference, args.repeats)
                print(
                    f"| {name} | {dim} | {args.samples} | {reference} | {fid_s:.3f} | {kid_s:.3f} |",
                    flush=True,
                )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
