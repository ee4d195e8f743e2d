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


# The job's output is the run's record (snapshot digests), written once training is complete: the
# snapshots, state.pt and train.jsonl are not declared, so that Snakemake never deletes them and a
# killed job's rerun resumes from state.pt; an edited train.json starts the run over
# (--restart-on-change).
rule train:
    input:
        config="runs/{dataset}/{variant}/s{train_seed}/train.json",
        data="data/{dataset}.zip",
    output:
        record="runs/{dataset}/{variant}/s{train_seed}/trained.json",
    log:
        "logs/train/{dataset}-{variant}-s{train_seed}.log",
    conda:
        "../../environment.yml"
    resources:
        gpu=PARAMS.gpus.train,
    params:
        launch=GRID["launch"]["train"],
        outdir=lambda wildcards, output: os.path.dirname(output.record),
    shell:
        "{params.launch} --config {input.config} --data {input.data} --outdir {params.outdir}"
        " --restart-on-change --record {output.record} > {log} 2>&1"
