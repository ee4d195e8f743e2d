# Datasets, feature networks and reference statistics: everything evaluation compares against.


rule prepare:
    output:
        "data/{dataset}.zip",
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


# The digits feature network (digitsnet scoring), trained on the profile's digits dataset.
rule featnet:
    input:
        data=lambda wildcards: f"data/{featnet_dataset(PARAMS)}.zip",
    output:
        net="data/digitsnet.pt",
        info="data/digitsnet.json",
    log:
        "logs/featnet.log",
    conda:
        "../../environment.yml"
    shell:
        "fdm featnet --data {input.data} --dest {output.net} > {log} 2>&1"


# Inception's TorchScript weights (Inception scoring): the only job that needs the network.
rule fetch_inception:
    output:
        "data/inception/inception-2015-12-05.pt",
    log:
        "logs/fetch_inception.log",
    conda:
        "../../environment.yml"
    shell:
        "fdm fetch-inception --dir data/inception > {log} 2>&1"


# One statistics file per (dataset, feature space); an evaluation reads all of its dataset's.
rule ref_stats:
    input:
        data="data/{dataset}.zip",
        network=lambda wildcards: MEASURES[wildcards.measure]["network"],
    output:
        "data/stats/{dataset}/{measure}.npz",
    log:
        "logs/ref_stats/{dataset}.{measure}.log",
    conda:
        "../../environment.yml"
    params:
        options=lambda wildcards: unpack(MEASURES[wildcards.measure]["options"]),
    shell:
        "fdm ref-stats --data {input.data} --dest {output} {params.options} > {log} 2>&1"
