# Evaluation: one plan per snapshot milestone (its sampler/NFE points, seeds and scoring), then one job
# per (model, milestone) that samples each point once and scores it in every feature space.


# The plan changes only when this milestone's evaluations do: adding an NFE to the study reruns the
# final snapshot's evaluations only.
rule eval_config:
    output:
        paths.EVAL_PLAN,
    log:
        LOGS + "/eval_config/{dataset}-{kimg}.log",
    conda:
        "../../environment.yml"
    params:
        file=PARAMS_FILE,
        plan=eval_plan,
    shell:
        "fdm eval-config --params {params.file} --dataset {wildcards.dataset} --kimg {wildcards.kimg}"
        " --dest {output} > {log} 2>&1"


# The job's output is its record: the point folders (metrics.json, grid.png, timing.json, samples.npz)
# are not declared, so a killed job's rerun keeps the points it finished (those of the same code). With
# gpus.evaluate > 1, `fdm evaluate` starts itself under torchrun.
rule evaluate:
    input:
        plan=paths.EVAL_PLAN,
        trained=paths.TRAINED,
        stats=stats_folders,
        code=code("evaluate"),
    output:
        record=paths.EVALUATED,
    log:
        LOGS + "/evaluate/{dataset}-{variant}-s{train_seed}-{kimg}.log",
    conda:
        "../../environment.yml"
    resources:
        gpu=PARAMS.gpus.evaluate,
    params:
        run=paths.RUN,
    shell:
        "fdm evaluate --config {input.plan} --run {params.run} --gpus {resources.gpu}"
        " --record {output.record} > {log} 2>&1"
