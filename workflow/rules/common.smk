# The profile, validated, and the paths and per-job params every rule uses.
#
# The `fdm` commands read the params file itself, so a profile is chosen with one
# `--configfile FILE` (or params.yaml by default) and that file replaces params.yaml outright rather
# than being merged into it; `--config key=value` overrides are refused, since the commands would not
# see them. Every setting a job depends on is passed through its rule's `params:`, so editing one
# reruns exactly the jobs that read it (Snakemake's params rerun trigger). Every path comes from
# fdm.paths, as dvc.yaml's literal templates do (tests/test_paths.py): the profile's outputs lie under
# out/<name>/, the `profile` wildcard's one value, so that no other profile's files can be planned here.
# Code is an input like settings: each stage's jobs depend on data/code/<stage>.json, which the
# code_digest rule rewrites when the stage's source digest (fdm.provenance) changes.

import os
import re
import sys

from snakemake.common.configfile import load_configfile
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from fdm import paths
from fdm.config import load_params
from fdm.errors import FdmError
from fdm.jobs import prepare_settings, root_conflict
from fdm.names import EXTRACTORS, FORMULATIONS
from fdm.params_file import schema_file
from fdm.provenance import STAGES, source_digest


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
with schema_file() as schema:  # the schema with fdm.names' lists filled in
    validate(config, schema=schema)
try:
    PARAMS = load_params(PARAMS_FILE)
except FdmError as err:
    raise WorkflowError(str(err)) from None
PROFILE = PARAMS.name
LOGS = paths.LOGS  # job logs, under out/{profile}/logs as the outputs of their jobs
SHARED_LOGS = paths.LOGS.format(profile=PROFILE)  # the logs of jobs shared by every profile (no wildcard)
CONFLICT = root_conflict(PARAMS)
if CONFLICT:
    print(CONFLICT, file=sys.stderr)


wildcard_constraints:
    profile=re.escape(PROFILE),
    stage="|".join(STAGES),
    dataset="|".join(PARAMS.datasets),
    variant="|".join(PARAMS.variants),
    train_seed=r"\d+",
    kimg=r"\d+",
    extractor="|".join(EXTRACTORS),
    formulation="|".join(FORMULATIONS),


def train_settings(wildcards):
    """Everything `fdm train-config` writes for this job (the seed is derived from seed + identity)."""
    return PARAMS.train_config(wildcards.dataset, wildcards.variant, int(wildcards.train_seed))


def eval_plan(wildcards):
    """Everything `fdm eval-config` writes for this snapshot milestone."""
    return PARAMS.eval_plan(wildcards.dataset, int(wildcards.kimg))


def dataset_entry(wildcards):
    """What `fdm prepare-dataset` makes the dataset from (not its cond for digits and CIFAR-10)."""
    return prepare_settings(PARAMS, wildcards.dataset)


def stats_folders(wildcards):
    """The reference statistics of the dataset for every feature extractor of the profile."""
    return [paths.stats(PROFILE, wildcards.dataset, extractor) for extractor in PARAMS.eval.extractors]


def evaluations():
    """The record of every evaluation job of the profile: one per model and snapshot milestone, and one
    per released checkpoint (at the final milestone)."""
    runs = paths.runs(PROFILE)
    trained = [
        paths.evaluated(paths.run(d, v, s, runs), kimg) for d, v, s in PARAMS.models() for kimg in PARAMS.snapshot_kimg
    ]
    released = [
        paths.evaluated(paths.pretrained(p.dataset, p.formulation, runs), PARAMS.duration_kimg) for p in PARAMS.pretrained
    ]
    return trained + released


def code(stage):
    """The code digest file the jobs of ``stage`` depend on."""
    return paths.code(stage)


def released_entry(wildcards):
    """The profile's pretrained entry of this checkpoint: what `fdm import-checkpoint --params` reads."""
    entry = PARAMS.released(wildcards.dataset, wildcards.formulation)
    return [entry.url, entry.sha256]
