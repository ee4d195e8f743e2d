"""Where every artifact of the pipeline lives: one template per kind of file, in one torch-free module.

Every profile writes under its own root, ``out/<name>/`` (``name`` is a key of the profile), so that no
profile plans or overwrites another's jobs. What does not depend on any profile setting is shared by all
profiles of a checkout, under ``data/``: the feature networks, the code digests, and the store that the
profiles' datasets and reference statistics are linked from (keyed by what they are made of,
``fdm.store``).

The Snakefile uses the templates as they are: ``{profile}`` is a wildcard whose one allowed value is the
profile's name, the other placeholders are its wildcards. The job commands, the report and tracking
build paths with the functions below. dvc.yaml must spell the same templates literally, with
``${name}`` for ``{profile}`` and ``${item.<name>}`` for the others; tests/test_paths.py checks it.

```
out/<profile>/                                       everything one profile makes
  data/<dataset>.zip                                 prepare (linked from data/store/datasets/)
  data/stats/<dataset>/<extractor>/<mode>.npz        ref-stats (linked from data/store/stats/)
  runs/<dataset>/<variant>/s<seed>/train.json        train-config: the job's resolved settings
  runs/<dataset>/<variant>/s<seed>/trained.json      train: the record (snapshot digests, code) and
  runs/<dataset>/<variant>/s<seed>/snapshots/        <kimg:06d>.safetensors, beside state.pt, train.jsonl,
                                                     kept/ (what resume needs; not declared)
  runs/<dataset>/eval/<kimg>.json                    eval-config: the points every model is evaluated at
  runs/<dataset>/<variant>/s<seed>/eval/<kimg>/evaluated.json   evaluate: the record, beside
      <sampler>-<nfe>/metrics.json, timing.json, grid.png (samples.npz)
  runs/<dataset>/<formulation>/pretrained/           import-checkpoint: a released checkpoint as a run
  reports/<dataset>/                                 report: tables and figures
  summary.json                                       report: the few numbers `dvc exp show` compares
  plots/{fid_vs_mimg,fid_vs_nfe}/<dataset>.csv       report: the curves `dvc plots` draws
  logs/<rule>/<job>.log                              Snakemake's job logs
  mlflow_runs.json                                   track
  profile.json                                       which params file first wrote here
data/networks/<extractor>/                           feature-net: digitsnet.pt, inception-2015-12-05.pt
data/code/<stage>.json                               code-digest: the digest of each stage's source
data/store/{datasets,stats}/                         the shared store (fdm.store)
```
"""

from __future__ import annotations

OUT = "out/{profile}"
DATASET = OUT + "/data/{dataset}.zip"
STATS = OUT + "/data/stats/{dataset}/{extractor}"
STATS_FILE = STATS + "/{mode}.npz"
RUNS = OUT + "/runs"
RUN = RUNS + "/{dataset}/{variant}/s{train_seed}"
TRAIN_CONFIG = RUN + "/train.json"
TRAINED = RUN + "/trained.json"
SNAPSHOTS = RUN + "/snapshots"
EVAL_PLAN = RUNS + "/{dataset}/eval/{kimg}.json"
EVAL = RUN + "/eval/{kimg}"
EVALUATED = EVAL + "/evaluated.json"
PRETRAINED = RUNS + "/{dataset}/{formulation}/pretrained"  # a released checkpoint, imported (no training)
PRETRAINED_RECORD = PRETRAINED + "/trained.json"
PRETRAINED_SNAPSHOTS = PRETRAINED + "/snapshots"
PRETRAINED_EVALUATED = PRETRAINED + "/eval/{kimg}/evaluated.json"
REPORTS = OUT + "/reports"
REPORT = REPORTS + "/{dataset}"
SUMMARY = OUT + "/summary.json"
PLOTS = OUT + "/plots"
LOGS = OUT + "/logs"
TRACKED = OUT + "/mlflow_runs.json"
PROFILE_MARK = OUT + "/profile.json"

# Shared by every profile of the checkout.
NETWORK = "data/networks/{extractor}"
CODE = "data/code/{stage}.json"
STORE = "data/store"

# Inside a run folder (training) and inside an evaluation point's folder.
SNAPSHOT_DIR = "snapshots"
KEPT_DIR = "kept"  # hard links of the snapshots, which a resumed training restores (fdm.training.run_folder)
STATE_FILE = "state.pt"
LOG_FILE = "train.jsonl"
RECORD_FILE = "trained.json"
POINT = "{sampler}-{nfe}"
METRICS_FILE = "metrics.json"
TIMING_FILE = "timing.json"
GRID_FILE = "grid.png"
SAMPLES_FILE = "samples.npz"

DIGITSNET_FILE = "digitsnet.pt"
INCEPTION_FILE = "inception-2015-12-05.pt"


def out(profile: str) -> str:
    """The root of everything profile ``profile`` makes: ``out/<profile>``."""
    return OUT.format(profile=profile)


def dataset_zip(profile: str, dataset: str) -> str:
    return DATASET.format(profile=profile, dataset=dataset)


def network(extractor: str) -> str:
    """The folder of a feature network: ``data/networks/digitsnet/digitsnet.pt`` (+ .json), or
    ``data/networks/inception/inception-2015-12-05.pt``."""
    return NETWORK.format(extractor=extractor)


def code(stage: str) -> str:
    """The code digest of a stage (``fdm code-digest``), which the stage's jobs depend on."""
    return CODE.format(stage=stage)


def stats(profile: str, dataset: str, extractor: str) -> str:
    return STATS.format(profile=profile, dataset=dataset, extractor=extractor)


def stats_file(profile: str, dataset: str, extractor: str, mode: str) -> str:
    return STATS_FILE.format(profile=profile, dataset=dataset, extractor=extractor, mode=mode)


def runs(profile: str) -> str:
    """The folder of the profile's run folders (``fdm report --runs``, ``fdm track --runs``)."""
    return RUNS.format(profile=profile)


def reports(profile: str) -> str:
    return REPORTS.format(profile=profile)


def summary(profile: str) -> str:
    """The profile's summary (``fdm.report.summary``), DVC's metrics file."""
    return SUMMARY.format(profile=profile)


def plots(profile: str) -> str:
    """The folder of the curves DVC plots (``fdm.report.summary``)."""
    return PLOTS.format(profile=profile)


def tracked(profile: str) -> str:
    return TRACKED.format(profile=profile)


def profile_mark(profile: str) -> str:
    return PROFILE_MARK.format(profile=profile)


def run(dataset: str, variant: str, train_seed: int, root: str) -> str:
    """The run folder of one model under the runs folder ``root`` (``runs(profile)``, or ``--runs``)."""
    return f"{root}/{dataset}/{variant}/s{train_seed}"


def train_config(profile: str, dataset: str, variant: str, train_seed: int) -> str:
    return TRAIN_CONFIG.format(profile=profile, dataset=dataset, variant=variant, train_seed=train_seed)


def trained(run_dir: str) -> str:
    """The record of a finished training (or import) in ``run_dir``."""
    return f"{run_dir}/{RECORD_FILE}"


def snapshot_name(kimg: float) -> str:
    """File name of the snapshot at ``kimg``: ``000200.safetensors``, ``000000.064.safetensors``. Names sort by
    kimg except where a whole and a fractional milestone share their whole part (``000001.5`` sorts before
    ``000001``, '5' < 's'); no profile has such a pair, and every lookup goes by name."""
    stem = f"{int(kimg):06d}" if float(kimg).is_integer() else f"{kimg:010.3f}".rstrip("0")
    return f"{stem}.safetensors"


def snapshot(run_dir: str, kimg: float) -> str:
    """The snapshot ``fdm train`` writes at milestone ``kimg`` in ``run_dir``."""
    return f"{run_dir}/{SNAPSHOT_DIR}/{snapshot_name(kimg)}"


def eval_plan(profile: str, dataset: str, kimg: int) -> str:
    return EVAL_PLAN.format(profile=profile, dataset=dataset, kimg=kimg)


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


def pretrained(dataset: str, formulation: str, root: str) -> str:
    """The run folder of a released checkpoint under the runs folder ``root``: its snapshot, record and
    evaluations, as a trained model's."""
    return f"{root}/{dataset}/{formulation}/pretrained"


def report(profile: str, dataset: str) -> str:
    return REPORT.format(profile=profile, dataset=dataset)
