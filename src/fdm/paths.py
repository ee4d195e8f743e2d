"""Where every artifact of the pipeline lives: one template per kind of file, in one torch-free module.

The Snakefile (its rules' inputs and outputs use the templates as they are, the placeholders being its
wildcards), the job commands, the report and tracking all build paths here. dvc.yaml must spell the
same templates literally, with ``${item.<name>}`` for ``{<name>}``; tests/test_paths.py checks it.

```
data/<dataset>.zip                                   prepare
data/networks/<extractor>/                           feature-net: digitsnet.pt, inception-2015-12-05.pt
data/stats/<dataset>/<extractor>/<mode>.npz          ref-stats, one job per (dataset, extractor)
runs/<dataset>/<variant>/s<seed>/train.json          train-config: the job's resolved settings
runs/<dataset>/<variant>/s<seed>/trained.json        train: the record (snapshot digests), beside
    snapshots/<kimg:06d>.safetensors, state.pt, train.jsonl
runs/<dataset>/eval/<kimg>.json                      eval-config: the points every model is evaluated at
runs/<dataset>/<variant>/s<seed>/eval/<kimg>/evaluated.json   evaluate: the record, beside
    <sampler>-<nfe>/metrics.json, timing.json, grid.png (samples.npz)
runs/<dataset>/<formulation>/pretrained/               import-checkpoint: a released checkpoint as a run
    (trained.json, snapshots/<final kimg>.safetensors, eval/<final kimg>/...)
reports/<dataset>/                                   report
mlflow_runs.json                                     track
```
"""

from __future__ import annotations

DATASET = "data/{dataset}.zip"
NETWORK = "data/networks/{extractor}"
STATS = "data/stats/{dataset}/{extractor}"
STATS_FILE = STATS + "/{mode}.npz"
RUNS = "runs"
RUN = RUNS + "/{dataset}/{variant}/s{train_seed}"
TRAIN_CONFIG = RUN + "/train.json"
TRAINED = RUN + "/trained.json"
EVAL_PLAN = "runs/{dataset}/eval/{kimg}.json"
EVAL = RUN + "/eval/{kimg}"
EVALUATED = EVAL + "/evaluated.json"
PRETRAINED = "runs/{dataset}/{formulation}/pretrained"  # a released checkpoint, imported (no training)
PRETRAINED_RECORD = PRETRAINED + "/trained.json"
PRETRAINED_EVALUATED = PRETRAINED + "/eval/{kimg}/evaluated.json"
REPORTS = "reports"
REPORT = REPORTS + "/{dataset}"
TRACKED = "mlflow_runs.json"

# Inside a run folder (training) and inside an evaluation point's folder.
SNAPSHOT_DIR = "snapshots"
STATE_FILE = "state.pt"
LOG_FILE = "train.jsonl"
POINT = "{sampler}-{nfe}"
METRICS_FILE = "metrics.json"
TIMING_FILE = "timing.json"
GRID_FILE = "grid.png"
SAMPLES_FILE = "samples.npz"

DIGITSNET_FILE = "digitsnet.pt"
INCEPTION_FILE = "inception-2015-12-05.pt"


def dataset_zip(dataset: str) -> str:
    return DATASET.format(dataset=dataset)


def network(extractor: str) -> str:
    """The folder of a feature network: ``data/networks/digitsnet/digitsnet.pt`` (+ .json), or
    ``data/networks/inception/inception-2015-12-05.pt``."""
    return NETWORK.format(extractor=extractor)


def stats(dataset: str, extractor: str) -> str:
    return STATS.format(dataset=dataset, extractor=extractor)


def stats_file(dataset: str, extractor: str, mode: str) -> str:
    return STATS_FILE.format(dataset=dataset, extractor=extractor, mode=mode)


def run(dataset: str, variant: str, train_seed: int, root: str = RUNS) -> str:
    """The run folder of one model; ``root`` replaces ``runs`` (``fdm report --runs``, ``fdm track --runs``)."""
    return f"{root}/{dataset}/{variant}/s{train_seed}"


def train_config(dataset: str, variant: str, train_seed: int) -> str:
    return TRAIN_CONFIG.format(dataset=dataset, variant=variant, train_seed=train_seed)


def trained(dataset: str, variant: str, train_seed: int) -> str:
    return TRAINED.format(dataset=dataset, variant=variant, train_seed=train_seed)


def snapshot_name(kimg: float) -> str:
    """File name of the snapshot at ``kimg``, sorting by kimg: ``000200.safetensors``, ``000000.064.safetensors``."""
    stem = f"{int(kimg):06d}" if float(kimg).is_integer() else f"{kimg:010.3f}".rstrip("0")
    return f"{stem}.safetensors"


def snapshot(run_dir: str, kimg: float) -> str:
    """The snapshot ``fdm train`` writes at milestone ``kimg`` in ``run_dir``."""
    return f"{run_dir}/{SNAPSHOT_DIR}/{snapshot_name(kimg)}"


def eval_plan(dataset: str, kimg: int) -> str:
    return EVAL_PLAN.format(dataset=dataset, kimg=kimg)


def evaluation(run_dir: str, kimg: int) -> str:
    """The folder of the evaluations of ``run_dir``'s snapshot at ``kimg``."""
    return f"{run_dir}/eval/{kimg}"


def evaluated(run_dir: str, kimg: int) -> str:
    return f"{evaluation(run_dir, kimg)}/evaluated.json"


def point(run_dir: str, kimg: int, sampler: str, nfe: int) -> str:
    """The folder of one evaluation point: its metrics.json, timing.json, grid.png (and samples.npz)."""
    return f"{evaluation(run_dir, kimg)}/{POINT.format(sampler=sampler, nfe=nfe)}"


def metrics(run_dir: str, kimg: int, sampler: str, nfe: int) -> str:
    return f"{point(run_dir, kimg, sampler, nfe)}/{METRICS_FILE}"


def pretrained(dataset: str, formulation: str, root: str = RUNS) -> str:
    """The run folder of a released checkpoint: its snapshot, record and evaluations, as a trained model's."""
    return f"{root}/{dataset}/{formulation}/pretrained"


def report(dataset: str) -> str:
    return REPORT.format(dataset=dataset)
