# Datasets, feature networks and reference statistics: everything evaluation compares against.
# A profile's dataset and statistics are its own files (out/<name>/data/), copied from the shared store
# (fdm.store) when another profile made the same; the feature networks depend on no profile setting and
# are shared (data/networks/).


# Each stage's code digest: rewritten (and its jobs rerun) when the stage's source digest changes, which
# an edit of comments, docstrings or layout does not (fdm.provenance).
rule code_digest:
    output:
        paths.CODE,
    log:
        SHARED_LOGS + "/code_digest/{stage}.log",
    conda:
        "../../environment.yml"
    params:
        source=lambda wildcards: source_digest(wildcards.stage),
    shell:
        "fdm code-digest --stage {wildcards.stage} --dest {output} > {log} 2>&1"


rule prepare:
    input:
        code=code("prepare"),
    output:
        paths.DATASET,
    log:
        LOGS + "/prepare/{dataset}.log",
    conda:
        "../../environment.yml"
    params:
        file=PARAMS_FILE,
        entry=dataset_entry,
    shell:
        "fdm prepare-dataset --params {params.file} --dataset {wildcards.dataset} --dest {output}"
        " > {log} 2>&1"


# One network per feature extractor of the profile: the digits network is trained (on the embedded
# digits), Inception's weights are downloaded (the only job that needs the internet).
rule feature_net:
    input:
        code=code("feature_net"),
    output:
        directory(paths.NETWORK),
    log:
        SHARED_LOGS + "/feature_net/{extractor}.log",
    conda:
        "../../environment.yml"
    shell:
        "fdm feature-net --extractor {wildcards.extractor} --dest {output} > {log} 2>&1"


# One job per (dataset, extractor): a statistics file per mode the profile scores the extractor in.
rule ref_stats:
    input:
        data=paths.DATASET,
        network=paths.NETWORK,
        code=code("ref_stats"),
    output:
        directory(paths.STATS),
    log:
        LOGS + "/ref_stats/{dataset}.{extractor}.log",
    conda:
        "../../environment.yml"
    params:
        file=PARAMS_FILE,
        modes=lambda wildcards: list(PARAMS.eval.modes),
    shell:
        "fdm ref-stats --params {params.file} --dataset {wildcards.dataset} --extractor {wildcards.extractor}"
        " --dest {output} > {log} 2>&1"
