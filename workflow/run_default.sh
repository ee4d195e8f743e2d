#!/usr/bin/env bash
# `make run`: the default (smoke) profile, params.yaml, through Snakemake on 2 cores.
# Extra arguments go to snakemake, e.g. `bash workflow/run_default.sh --configfile config/study.yaml`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec snakemake --cores 2 --profile workflow/profiles/local "$@"
