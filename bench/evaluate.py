"""Evaluation cost: every point of a snapshot in one process against one process per point.

Before the per-snapshot evaluate job, the pipeline ran one ``fdm evaluate`` process per (sampler, NFE)
point, each paying the start-up (Python imports, reading the snapshot, the feature network and the
reference statistics) again. This times, side by side and alternating, in a finished project:

- ``one process``: ``fdm evaluate --config out/<profile>/runs/<d>/eval/<kimg>.json`` over all the snapshot's points;
- ``a process per point``: the same command once per point, each with a one-point copy of that config;
- the imports alone, which every process pays before its first image: ``import torch`` against
  ``import fdm.generation.evaluation`` (torch, and clean-fid for the Frechet distance, which brings
  torchvision and through it ``torch._dynamo``).

Both evaluations write into temporary run folders holding a copy of the snapshot, never into the
project's own runs, and the script checks that both wrote the same metrics.json (every field but the
snapshot's path, which names the temporary folder).

    .venv/bin/python bench/evaluate.py /path/to/study-project --run out/study/runs/digits/edm/s0 --kimg 40
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fdm import paths


def timed(command: list[str], project: Path, env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"evaluate: {' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return time.perf_counter() - start


def copy_run(run: Path, kimg: int, dest: Path) -> Path:
    """A run folder holding only the snapshot of ``kimg``."""
    snapshot = Path(paths.snapshot(str(run), kimg))
    target = Path(paths.snapshot(str(dest), kimg))
    target.parent.mkdir(parents=True)
    shutil.copy2(snapshot, target)
    return dest


def scores(metrics_path: str) -> dict:
    """A metrics.json without the snapshot's path (which names the temporary run folder)."""
    return {k: v for k, v in json.loads(Path(metrics_path).read_text()).items() if k != "snapshot"}


def evaluate(config: Path, run: Path, kimg: int, project: Path, env: dict) -> float:
    record = Path(paths.evaluated(str(run), kimg))
    return timed(
        [
            str(Path(sys.executable).with_name("fdm")),  # the venv's, whether or not it is on PATH
            "evaluate",
            "--config",
            str(config),
            "--run",
            str(run),
            "--gpus",
            "0",
            "--record",
            str(record),
        ],
        project,
        env,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path, help="a finished project folder (e.g. after the study profile)")
    parser.add_argument("--run", required=True, help="run folder, relative to the project")
    parser.add_argument("--kimg", type=int, required=True, help="the snapshot to evaluate")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every process")
    args = parser.parse_args()

    project = args.project.resolve()
    parts = Path(args.run).parts  # out/<profile>/runs/<dataset>/<variant>/s<seed>
    config_path = project / paths.eval_plan(parts[1], parts[3], args.kimg)
    config = json.loads(config_path.read_text())
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    python = [sys.executable, "-c"]
    times: dict[str, list[float]] = {
        "one process": [],
        "a process per point": [],
        "import torch": [],
        "import fdm.generation.evaluation": [],
    }
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(dir=project) as scratch:
        scratch = Path(scratch)
        for repeat in range(args.repeats):
            together = copy_run(project / args.run, args.kimg, scratch / f"together{repeat}")
            times["one process"].append(evaluate(config_path, together, args.kimg, project, env))
            apart_total = 0.0
            for i, point in enumerate(config["points"]):
                single = scratch / f"point{repeat}-{i}.json"
                single.write_text(json.dumps({**config, "points": [point]}))
                apart = copy_run(project / args.run, args.kimg, scratch / f"apart{repeat}-{i}")
                apart_total += evaluate(single, apart, args.kimg, project, env)
                mine = scores(paths.metrics(str(together), args.kimg, point["sampler"], point["nfe"]))
                theirs = scores(paths.metrics(str(apart), args.kimg, point["sampler"], point["nfe"]))
                if mine != theirs:
                    sys.exit(f"evaluate: {point} scored differently in one process and alone")
            times["a process per point"].append(apart_total)
            for module in ("torch", "fdm.generation.evaluation"):
                times[f"import {module}"].append(timed(python + [f"import {module}"], project, env))
    points = len(config["points"])
    print(f"{args.run} at {args.kimg} kimg: {points} points, {config['seeds']} seeds, {args.repeats} repeats")
    print(f"load average (1 min): {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    print("| | median s | range |\n|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.1f} | {min(values):.1f}-{max(values):.1f} |")
    ratio = statistics.median(times["one process"]) / statistics.median(times["a process per point"])
    print(f"one process / a process per point: {ratio:.2f} (the same metrics.json values)")


if __name__ == "__main__":
    main()
