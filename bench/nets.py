"""Forward+backward throughput and peak memory of the SongUNet networks on the CPU.

Each configuration runs in its own subprocess so that its peak resident memory is its own. Reports
images per second of wall time, images per CPU-second (less sensitive to other processes on a shared
machine), the peak RSS and its rise over the RSS after imports.

    .venv/bin/python bench/nets.py                   # all three configurations, about a minute
    .venv/bin/python bench/nets.py --only small --iters 10
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

SMALL = dict(
    arch="ddpmpp", img_resolution=16, img_channels=1, model_channels=32, channel_mult=(1, 2), num_blocks=4
)

# name -> (fdm.nets.build kwargs, default batch size)
CONFIGS = {
    "small": (SMALL, 64),
    # The same without self-attention at 16x16 (only the decoder's lowest-resolution block keeps it).
    "small-noattn": ({**SMALL, "attn_resolutions": ()}, 64),
    "cifar": (
        dict(
            arch="ddpmpp",
            img_resolution=32,
            img_channels=3,
            label_dim=10,
            augment_dim=9,
            channel_mult=(2, 2, 2),
        ),
        2,
    ),
}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(name: str, batch: int, iters: int, warmup: int, threads: int) -> dict:
    """Time `iters` forward+backward passes in training mode after `warmup` untimed ones."""
    import torch

    from fdm.nets import build

    torch.set_num_threads(threads)
    rss_after_imports = peak_rss_mib()
    kwargs, _ = CONFIGS[name]
    torch.manual_seed(0)
    net = build(**kwargs).train()
    n, c, r = batch, kwargs["img_channels"], kwargs["img_resolution"]
    x, noise_labels = torch.randn(n, c, r, r), torch.randn(n)
    conditioning = {}
    if kwargs.get("label_dim"):
        conditioning["class_labels"] = torch.eye(kwargs["label_dim"])[
            torch.randint(kwargs["label_dim"], (n,))
        ]
    if kwargs.get("augment_dim"):
        conditioning["augment_labels"] = torch.zeros(n, kwargs["augment_dim"])
    wall, cpu = [], []
    for step in range(warmup + iters):
        w0, c0 = time.perf_counter(), time.process_time()
        net.zero_grad(set_to_none=True)
        net(x, noise_labels, **conditioning).square().mean().backward()
        if step >= warmup:
            wall.append(time.perf_counter() - w0)
            cpu.append(time.process_time() - c0)
    return dict(
        config=name,
        params=sum(p.numel() for p in net.parameters()),
        batch=batch,
        threads=threads,
        iters=iters,
        img_per_s=batch * iters / sum(wall),
        img_per_s_best=batch / min(wall),
        img_per_cpu_s=batch * iters / sum(cpu),
        peak_rss_mib=peak_rss_mib(),
        rss_rise_mib=peak_rss_mib() - rss_after_imports,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=sorted(CONFIGS), action="append", help="configuration(s) to run")
    parser.add_argument("--iters", type=int, default=5, help="timed iterations, small network")
    parser.add_argument("--cifar-iters", type=int, default=1, help="timed iterations, CIFAR network")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    parser.add_argument("--batch", type=int, help="batch size (default: 64 small, 2 CIFAR)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument(
        "--omp-wait-policy",
        default="PASSIVE",
        choices=["PASSIVE", "ACTIVE", "inherit"],
        help="OMP_WAIT_POLICY of the measuring process; PASSIVE keeps idle threads from spinning, "
        "which matters greatly on a CPU shared with other jobs",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:  # One configuration, in this process; the parent reads the JSON line.
        iters = args.cifar_iters if args.child == "cifar" else args.iters
        batch = args.batch or CONFIGS[args.child][1]
        print(json.dumps(measure(args.child, batch, iters, args.warmup, args.threads)))
        return

    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    header = f"{'config':12s} {'params':>11s} {'batch':>5s} {'img/s':>7s} {'best':>7s} {'img/cpu-s':>9s} {'peak RSS':>9s} {'rise':>8s}"
    print(header)
    for name in args.only or list(CONFIGS):
        command = [sys.executable, __file__, "--child", name] + sys.argv[1:]
        env = dict(os.environ)
        if args.omp_wait_policy != "inherit":
            env["OMP_WAIT_POLICY"] = args.omp_wait_policy
        out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(
            f"{name:12s} {r['params']:11,d} {r['batch']:5d} {r['img_per_s']:7.1f} {r['img_per_s_best']:7.1f} "
            f"{r['img_per_cpu_s']:9.1f} {r['peak_rss_mib']:6.0f} MiB {r['rss_rise_mib']:4.0f} MiB"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
