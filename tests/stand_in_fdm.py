"""A stand-in `fdm` for planning tests: each job writes its declared outputs in a moment, with bytes that
are a digest of exactly what the real command's outputs depend on, and logs its command line.

- The light jobs (``train-config``, ``eval-config``, ``code-digest``) run the real commands.
- ``prepare-dataset``: a digest of ``fdm.jobs.prepare_settings`` (what the real zip is made from).
- ``feature-net``, ``ref-stats``: digests of the extractor, and of the dataset zip, network and mode.
- ``train``: one "snapshot" per milestone, a digest of train.json without the settings a snapshot does
  not record (``RUNTIME_ONLY``), the data and the milestone, and the record of their digests and of the
  training code (``data/code/train.json``), as ``fdm train --record`` writes it.
- ``evaluate``: per point of the plan, a digest of the snapshot, the point, the seeds and the reference
  statistics; the record lists them and the evaluation code, as ``fdm evaluate --record`` does.
- ``report``, ``track``: a digest of every evaluation record under the runs folder (the report: in its
  folder, its summary and its plots folder).

Each call appends its argument list to the file named by $FDM_STAND_IN_LOG.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from fdm import paths


def digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True).encode())
    return h.hexdigest()


def file_digest(path: str) -> str:
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return digest(*[p.read_bytes() for p in files])


def write(path: str, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)


def options(args: list[str]) -> dict:
    values, i = {}, 0
    while i < len(args):
        name = args[i].removeprefix("--").replace("-", "_")
        if i + 1 < len(args) and not args[i + 1].startswith("--"):
            values[name], i = args[i + 1], i + 2
        else:
            values[name], i = True, i + 1
    return values


def main(argv: list[str]) -> None:
    with open(os.environ["FDM_STAND_IN_LOG"], "a") as log:
        log.write(" ".join(argv) + "\n")
    command, o = argv[0], options(argv[1:])
    if command in ("train-config", "eval-config", "code-digest"):
        from fdm.cli import main as real

        real(argv, prog_name="fdm")
    elif command == "prepare-dataset":
        from fdm.config import load_params
        from fdm.jobs import prepare_settings

        write(o["dest"], digest(prepare_settings(load_params(o["params"]), o["dataset"])))
    elif command == "feature-net":
        write(f"{o['dest']}/weights", digest(o["extractor"]))
    elif command == "ref-stats":
        from fdm.config import load_params
        from fdm.names import modes
        from fdm.paths import dataset_zip, network

        params = load_params(o["params"])
        for mode in modes(o["extractor"], params.eval.modes):
            data = dataset_zip(params.name, o["dataset"])
            stats = digest(file_digest(data), file_digest(network(o["extractor"])), mode)
            write(f"{o['dest']}/{mode}.npz", stats)
    elif command == "train":
        from fdm.paths import snapshot, snapshot_name
        from fdm.training.config import RUNTIME_ONLY, TrainConfig

        config = json.loads(Path(o["config"]).read_text())
        cfg = TrainConfig.from_dict({**config, "dataset": o["data"], "outdir": o["outdir"]})
        model = {k: v for k, v in config.items() if k not in RUNTIME_ONLY}
        record = {}
        for kimg in cfg.milestones_kimg():
            write(snapshot(o["outdir"], kimg), digest(model, file_digest(o["data"]), kimg))
            record[snapshot_name(kimg)] = file_digest(snapshot(o["outdir"], kimg))
        code = json.loads(Path(paths.code("train")).read_text())["source_sha256"]
        write(o["record"], json.dumps({"snapshots": record, "code": code}, indent=2))
    elif command == "evaluate":
        from fdm.paths import snapshot

        plan = json.loads(Path(o["config"]).read_text())
        stats = [file_digest(path) for path in plan["stats"]]
        shot = file_digest(snapshot(o["run"], plan["kimg"]))
        code = json.loads(Path(paths.code("evaluate")).read_text())["source_sha256"]
        points = {
            f"{p['sampler']}-{p['nfe']}": digest(shot, p, plan["seeds"], stats, code) for p in plan["points"]
        }
        write(o["record"], json.dumps({"points": points}, indent=2, sort_keys=True))
    elif command in ("report", "track"):
        records = sorted(Path(o["runs"]).glob("*/*/s*/eval/*/evaluated.json"))
        summary = digest(*[p.read_bytes() for p in records])
        if command == "report":
            write(f"{o['out']}/summary.txt", summary)
            write(o["summary"], json.dumps({"digest": summary}))
            write(f"{o['plots']}/fid_vs_mimg/summary.csv", summary)
        else:
            write(o["dest"], summary)
    else:
        raise SystemExit(f"stand-in fdm: unknown command {command}")


if __name__ == "__main__":
    main(sys.argv[1:])
