# The FDM reproduction pipeline: prepare -> feature_net -> ref_stats; train_config -> train;
# eval_config -> evaluate -> report -> track; code_digest -> each of them; every job an `fdm` command
# given only its identity and the params file (docs/pipeline.md). A profile's outputs lie under
# out/<name>/. dvc.yaml declares the same jobs; tests/test_workflow_equivalence.py
# checks that the two agree, for the profiles and for edits of them.
#
#   snakemake --cores 2 --profile workflow/profiles/local                      # params.yaml (smoke)
#   snakemake --cores all --configfile config/paper.yaml --resources gpu=8     # the paper's grid


from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


# `snakemake --report report.html` after a run: this page, the figures and tables of the report rule.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/pretrained.smk"
include: "workflow/rules/report.smk"


# Light jobs, and the one download (compute nodes often have no internet), run where snakemake runs.
localrules:
    all,
    code_digest,
    train_config,
    eval_config,
    feature_net,
    import_checkpoint,
    report,
    track,


rule all:
    default_target: True
    input:
        paths.reports(PROFILE),
        paths.tracked(PROFILE),
        [code(stage) for stage in STAGES],
