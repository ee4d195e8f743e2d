# Datasets, feature networks and reference statistics: everything evaluation compares against.


rule prepare:
    output:
        paths.DATASET,
    log:
        "logs/prepare/{dataset}.log",
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
    output:
        directory(paths.NETWORK),
    log:
        "logs/feature_net/{extractor}.log",
    conda:
        "../../environment.yml"
    shell:
        "fdm feature-net --extractor {wildcards.extractor} --dest {output} > {log} 2>&1"


# One job per (dataset, extractor): a statistics file per mode the profile scores the extractor in.
rule ref_stats:
    input:
        data=paths.DATASET,
        network=paths.NETWORK,
    output:
        directory(paths.STATS),
    log:
        "logs/ref_stats/{dataset}.{extractor}.log",
    conda:
        "../../environment.yml"
    params:
        file=PARAMS_FILE,
        modes=lambda wildcards: list(PARAMS.eval.modes),
    shell:
        "fdm ref-stats --params {params.file} --dataset {wildcards.dataset} --extractor {wildcards.extractor}"
        " --dest {output} > {log} 2>&1"
