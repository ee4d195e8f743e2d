"""`fdm import-checkpoint` before and after the hardening (issue 21), side by side in one run.

Writes training pickles with the tests' stand-in of the authors' structure (tests/authors_pickles.py):
the paper's CIFAR-10 DDPM++ (55.7M weights, 0.22 GB) and a small network, then runs `fdm import-checkpoint`
on each, alternating between this tree and the code of ``--baseline`` (a commit, extracted with
``git archive`` into a temporary folder), each run a fresh process as a user would start it, ``--repeats``
times. Prints the median and best wall-clock seconds, the ratio after/before, and the peak RSS of the
process tree (the parent and the conversion child: ``RUSAGE_CHILDREN`` of a wrapper process); checks that
both write byte-identical snapshots.

    PYTHONPATH=src python bench/import_checkpoint.py [--baseline 7a1e496] [--repeats 5] [--only cifar]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

# One `fdm import-checkpoint` as a user runs it (a fresh process), printing the peak RSS of its largest process:
# this one, or the conversion child whose usage fdm.checkpoints.backstop logs (the tree before had no child).
_RUN = """
import logging, sys
def peak():  # VmHWM: ru_maxrss would carry the bench's own peak across exec
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
peaks = []
class Usage(logging.Handler):
    def emit(self, record):
        peaks.append(getattr(record, "usage", {}).get("peak_rss_mib", 0))
log = logging.getLogger("fdm.checkpoints.backstop")
log.addHandler(Usage())
log.setLevel(logging.DEBUG)
from fdm.cli import main
try:
    main(sys.argv[1:], prog_name="fdm")
except SystemExit as end:
    if end.code:
        raise
peaks.append(peak())
print(max(peaks), file=sys.stderr)
"""

CASES = {
    # The paper's CIFAR-10 network (docs/paper.md): DDPM++, 128 channels, [2, 2, 2], 4 blocks, attention at 16.
    "cifar": dict(
        arch="ddpmpp",
        img_resolution=32,
        img_channels=3,
        label_dim=10,
        augment_dim=9,
        model_channels=128,
        channel_mult=[2, 2, 2],
        num_blocks=4,
        attn_resolutions=[16],
    ),
    "small": dict(
        arch="ncsnpp",
        img_resolution=16,
        img_channels=1,
        label_dim=0,
        augment_dim=0,
        model_channels=32,
        channel_mult=[1, 2],
        num_blocks=2,
        attn_resolutions=[8],
    ),
}


def write_pickle(name: str, path: Path) -> None:
    import torch
    from authors_pickles import training_pickle

    from fdm.nets import ARCHITECTURES, DEFAULT_OPTIONS, build

    options = {**DEFAULT_OPTIONS, **ARCHITECTURES[CASES[name]["arch"]], **CASES[name]}
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
    torch.manual_seed(0)
    net = build(**config)
    loss = ("EDMLoss", {"warmup_ite": 10000.0})
    path.write_bytes(training_pickle("FDM_EDMPrecond", config, net, {"fdm_multiplier": 2.0}, loss=loss))


def extract(commit: str, folder: Path) -> Path:
    """The source tree of ``commit`` (its src/), for PYTHONPATH."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "src"], capture_output=True, check=True
    )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(folder, filter="data")
    return folder / "src"


def one_import(src: Path, pickle: Path, dest: Path) -> tuple[float, float]:
    """(Wall-clock seconds of the whole process, its peak RSS in MiB)."""
    command = [sys.executable, "-c", _RUN, "import-checkpoint", "--source", str(pickle), "--dest", str(dest)]
    env = dict(os.environ, PYTHONPATH=str(src))
    began = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if done.returncode:
        raise SystemExit(f"import failed ({src}): {done.stderr.strip()}")
    return seconds, float(done.stderr.split()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", default="7a1e496", help="the commit to compare with")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", choices=sorted(CASES), action="append")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="fdm-bench-import-") as folder:
        work = Path(folder)
        trees = {"before": extract(args.baseline, work / "baseline"), "after": ROOT / "src"}
        for name in args.only or list(CASES):
            pickle = work / f"{name}.pkl"
            write_pickle(name, pickle)
            times = {side: [] for side in trees}
            rss = {side: [] for side in trees}
            for _ in range(args.repeats):
                for side, src in trees.items():
                    seconds, peak = one_import(src, pickle, work / f"{name}-{side}.safetensors")
                    times[side].append(seconds)
                    rss[side].append(peak)
            same = (work / f"{name}-before.safetensors").read_bytes() == (
                work / f"{name}-after.safetensors"
            ).read_bytes()
            median = {side: statistics.median(values) for side, values in times.items()}
            rows.append(
                dict(
                    case=name,
                    mbytes=pickle.stat().st_size / 1e6,
                    before=median["before"],
                    after=median["after"],
                    best_before=min(times["before"]),
                    best_after=min(times["after"]),
                    ratio=median["after"] / median["before"],
                    rss_before=max(rss["before"]),
                    rss_after=max(rss["after"]),
                    identical=same,
                )
            )
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")
    print(
        f"before: {args.baseline}; after: this tree; {args.repeats} alternating runs each, fresh processes\n"
    )
    print(
        "| pickle | MB | before s (median, best) | after s (median, best) | after / before | peak RSS MiB before, after | same snapshot |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['case']} | {r['mbytes']:.1f} | {r['before']:.2f}, {r['best_before']:.2f} | "
            f"{r['after']:.2f}, {r['best_after']:.2f} | {r['ratio']:.2f} | {r['rss_before']:.0f}, "
            f"{r['rss_after']:.0f} | {'yes' if r['identical'] else 'NO'} |"
        )
    print(json.dumps(rows))
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
