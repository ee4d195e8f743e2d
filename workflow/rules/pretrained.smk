# Released checkpoints (the profile's `pretrained` list, opt in): each imported without running its code,
# as the snapshot of the final milestone of out/<name>/runs/<dataset>/<formulation>/pretrained/, then evaluated with
# the final snapshot's plan, as a trained model is. The report puts the paper's numbers beside them.


# A local rule: it downloads (once, into the user's cache), which compute nodes often cannot.
rule import_checkpoint:
    input:
        code=code("import_checkpoint"),
    output:
        record=paths.PRETRAINED_RECORD,
        snapshots=directory(paths.PRETRAINED_SNAPSHOTS),
    log:
        LOGS + "/import_checkpoint/{dataset}-{formulation}.log",
    conda:
        "../../environment.yml"
    params:
        file=PARAMS_FILE,
        entry=released_entry,
        duration=PARAMS.duration_kimg,
    shell:
        "fdm import-checkpoint --params {params.file} --dataset {wildcards.dataset}"
        " --formulation {wildcards.formulation} --record {output.record} > {log} 2>&1"


rule evaluate_pretrained:
    input:
        plan=paths.EVAL_PLAN,
        trained=paths.PRETRAINED_RECORD,
        stats=stats_folders,
        code=code("evaluate"),
    output:
        record=paths.PRETRAINED_EVALUATED,
    log:
        LOGS + "/evaluate_pretrained/{dataset}-{formulation}-{kimg}.log",
    conda:
        "../../environment.yml"
    resources:
        gpu=PARAMS.gpus.evaluate,
    params:
        run=paths.PRETRAINED,
    shell:
        "fdm evaluate --config {input.plan} --run {params.run} --gpus {resources.gpu}"
        " --record {output.record} > {log} 2>&1"
