# Training: the resolved settings of each job as an artifact, then the run itself.


# train.json changes only when this job's settings do, so editing one variant reruns its chain only.
rule train_config:
    output:
        "runs/{dataset}/{variant}/s{train_seed}/train.json",
    log:
        "logs/train_config/{dataset}-{variant}-s{train_seed}.log",
    conda:
        "../../environment.yml"
    params:
        file=PARAMS_FILE,
        job=train_settings,
    shell:
        "fdm train-config --params {params.file} --dataset {wildcards.dataset} --variant {wildcards.variant}"
        " --train-seed {wildcards.train_seed} --dest {output} > {log} 2>&1"


rule train:
    input:
        config="runs/{dataset}/{variant}/s{train_seed}/train.json",
        data="data/{dataset}.zip",
    output:
        snapshots=directory("runs/{dataset}/{variant}/s{train_seed}/snapshots"),
        state="runs/{dataset}/{variant}/s{train_seed}/state.pt",
        log="runs/{dataset}/{variant}/s{train_seed}/train.jsonl",
    log:
        "logs/train/{dataset}-{variant}-s{train_seed}.log",
    conda:
        "../../environment.yml"
    resources:
        gpu=PARAMS.gpus.train,
    params:
        launch=launcher(PARAMS.gpus.train, "train"),
        outdir=lambda wildcards, output: os.path.dirname(output.state),
    shell:
        "{params.launch} --config {input.config} --data {input.data} --outdir {params.outdir} > {log} 2>&1"
