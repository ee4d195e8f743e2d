# Evaluation: sample a snapshot and score it in one pass (no images kept), one job per
# (model, kimg, sampler, NFE).


rule evaluate:
    input:
        snapshots="runs/{dataset}/{variant}/s{train_seed}/snapshots",
        stats=f"data/{{dataset}}.{MEASURE}.stats.npz",
        network=GRID["network"],
    output:
        metrics="runs/{dataset}/{variant}/s{train_seed}/eval/{kimg}/{sampler}-{nfe}/metrics.json",
        grid="runs/{dataset}/{variant}/s{train_seed}/eval/{kimg}/{sampler}-{nfe}/grid.png",
    log:
        "logs/evaluate/{dataset}-{variant}-s{train_seed}-{kimg}-{sampler}-{nfe}.log",
    conda:
        "../../environment.yml"
    resources:
        gpu=PARAMS.gpus.evaluate,
    params:
        launch=launcher(PARAMS.gpus.evaluate, "evaluate"),
        snapshot=snapshot,
        seeds=GRID["seeds"],
        batch=PARAMS.eval.batch,
        scoring=scoring_options(),
    shell:
        "{params.launch} --snapshot {params.snapshot} --sampler {wildcards.sampler} --nfe {wildcards.nfe}"
        " --seeds {params.seeds} --batch {params.batch} {params.scoring} --stats {input.stats}"
        " --dest {output.metrics} --grid {output.grid} > {log} 2>&1"
