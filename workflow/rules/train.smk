# Training: the resolved settings of each job as an artifact, then the run itself.


# train.json changes only when this job's settings do, so editing one variant reruns its chain only.
rule train_config:
    output:
        paths.TRAIN_CONFIG,
    log:
        LOGS + "/train_config/{dataset}-{variant}-s{train_seed}.log",
    conda:
        "../../environment.yml"
    params:
        file=PARAMS_FILE,
        job=train_settings,
    shell:
        "fdm train-config --params {params.file} --dataset {wildcards.dataset} --variant {wildcards.variant}"
        " --train-seed {wildcards.train_seed} --dest {output} > {log} 2>&1"


# The job's outputs are the run's record (snapshot digests, settings, code) and its snapshots, written
# once training is complete. state.pt, train.jsonl and kept/ (a hard link of every snapshot) are not
# declared: when Snakemake deletes the outputs of a killed job before its rerun, the rerun puts the
# snapshots back from kept/ and resumes from state.pt (fdm.training.run_folder). An edited train.json, or
# other training code, starts the run over (--restart-on-change). With gpus.train > 1, `fdm train` starts
# itself under torchrun; the GPU count is how the job runs, not what it computes, so it is a resource and
# no rerun trigger.
rule train:
    input:
        config=paths.TRAIN_CONFIG,
        data=paths.DATASET,
        code=code("train"),
    output:
        record=paths.TRAINED,
        snapshots=directory(paths.SNAPSHOTS),
    log:
        LOGS + "/train/{dataset}-{variant}-s{train_seed}.log",
    conda:
        "../../environment.yml"
    resources:
        gpu=PARAMS.gpus.train,
    params:
        outdir=paths.RUN,
    shell:
        "fdm train --config {input.config} --data {input.data} --outdir {params.outdir} --gpus {resources.gpu}"
        " --restart-on-change --record {output.record} > {log} 2>&1"
