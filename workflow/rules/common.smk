# The profile, validated, and the paths and per-job params every rule uses.
#
# The `fdm` commands read the params file itself, so a profile is chosen with one
# `--configfile FILE` (or params.yaml by default) and that file replaces params.yaml outright rather
# than being merged into it; `--config key=value` overrides are refused, since the commands would not
# see them. Every setting a job depends on is passed through its rule's `params:`, so editing one
# reruns exactly the jobs that read it (Snakemake's params rerun trigger).

import os

from snakemake.common.configfile import load_configfile
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from fdm.errors import FdmError
from fdm.jobs import (
    SAMPLES,
    check_grid,
    featnet_dataset,
    grid,
    snapshot_name,
    stats_path,
)
from fdm.config import load_params


def params_file():
    """The profile in effect: the one --configfile, else params.yaml."""
    files = [os.path.relpath(f) for f in workflow.overwrite_configfiles]
    if len(files) > 1:
        raise WorkflowError(f"give one params file with --configfile, not {len(files)}")
    if workflow.config_settings.config:
        raise WorkflowError(
            "set params in a params file (--configfile FILE): the fdm commands read the file, not --config"
        )
    return files[0] if files else "params.yaml"


PARAMS_FILE = params_file()
config.clear()
config.update(load_configfile(PARAMS_FILE))
validate(config, schema="../schemas/params.schema.yaml")
try:
    PARAMS = load_params(PARAMS_FILE)
    check_grid(PARAMS)
    GRID = grid(PARAMS)
except FdmError as err:
    raise WorkflowError(str(err)) from None
MEASURES = {measure["name"]: measure for measure in GRID["measures"]}
KEEP_SAMPLES = bool(GRID["keep_samples"])


wildcard_constraints:
    dataset="[a-z][a-z0-9_]*",
    variant="|".join(PARAMS.variants),
    train_seed=r"\d+",
    kimg=r"\d+",
    sampler="heun|euler|dpmpp_3s|dpmpp_2m",
    nfe=r"\d+",
    measure="|".join(MEASURES),


RUN = "runs/{dataset}/{variant}/s{train_seed}"


def snapshot(wildcards, input):
    """The snapshot file an evaluation samples from, in the snapshots folder beside the run's record."""
    return f"{os.path.dirname(input.trained)}/snapshots/{snapshot_name(wildcards.kimg)}"


def train_settings(wildcards):
    """Everything `fdm train-config` reads for this job (the seed is derived from seed + identity)."""
    dataset, variant = wildcards.dataset, wildcards.variant
    return {
        "settings": PARAMS.train.settings(dataset, variant),
        "cond": PARAMS.datasets[dataset].cond,
        "seed": PARAMS.seed,
        "duration_kimg": PARAMS.duration_kimg,
        "snapshot_kimg": list(PARAMS.snapshot_kimg),
        "tracking": [PARAMS.tracking.enabled, PARAMS.tracking.experiment(dataset)],
    }


def dataset_entry(wildcards):
    """The dataset's entry in the params: what `fdm prepare-dataset` reads."""
    d = PARAMS.datasets[wildcards.dataset]
    return [d.source, d.raw, d.resolution, d.channels, d.cond]


def unpack(options):
    """A dict of options as DVC unpacks it in a command: `--key value` each."""
    return " ".join(f"--{key} {value}" for key, value in options.items())


def stats_files(wildcards):
    """The reference statistics of the dataset in every feature space of the profile."""
    return [stats_path(wildcards.dataset, measure) for measure in MEASURES]


def stats_options(wildcards, input):
    """`--stats FILE` per feature space, as grid.evaluations[].stats writes them for DVC."""
    return " ".join(f"--stats {path}" for path in input.stats)


def samples_option(wildcards, output):
    """`--samples FILE` when the profile keeps the images, else nothing."""
    return f"--samples {output.samples}" if KEEP_SAMPLES else ""


def samples_output():
    """samples.npz beside metrics.json when the profile keeps the images (eval.keep_samples)."""
    if KEEP_SAMPLES:
        return {"samples": f"{RUN}/eval/{{kimg}}/{{sampler}}-{{nfe}}/{SAMPLES}"}
    return {}


def evaluations():
    """metrics.json of every evaluation of the profile."""
    return [
        f"{run}/eval/{e['kimg']}/{e['sampler']}-{e['nfe']}/metrics.json"
        for d, v, s in PARAMS.models()
        for run in [RUN.format(dataset=d, variant=v, train_seed=s)]
        for e in GRID["evaluations"]
        if e["dataset"] == d
    ]
