# Evaluation: sample a snapshot once and score it in every feature space of the profile (the paper's
# two Inception modes), one job per (model, kimg, sampler, NFE). The images are kept as samples.npz
# only when the profile sets eval.keep_samples.


rule evaluate:
    input:
        trained="runs/{dataset}/{variant}/s{train_seed}/trained.json",
        stats=stats_files,
    output:
        **samples_output(),
        metrics="runs/{dataset}/{variant}/s{train_seed}/eval/{kimg}/{sampler}-{nfe}/metrics.json",
        grid="runs/{dataset}/{variant}/s{train_seed}/eval/{kimg}/{sampler}-{nfe}/grid.png",
    log:
        "logs/evaluate/{dataset}-{variant}-s{train_seed}-{kimg}-{sampler}-{nfe}.log",
    conda:
        "../../environment.yml"
    resources:
        gpu=PARAMS.gpus.evaluate,
    params:
        launch=GRID["launch"]["evaluate"],
        snapshot=snapshot,
        seeds=GRID["seeds"],
        batch=PARAMS.eval.batch,
        scoring=unpack(GRID["scoring"]),
        stats=stats_options,
        samples=samples_option,
    shell:
        "{params.launch} --snapshot {params.snapshot} --sampler {wildcards.sampler} --nfe {wildcards.nfe}"
        " --seeds {params.seeds} --batch {params.batch} {params.scoring} {params.stats}"
        " --dest {output.metrics} --grid {output.grid} {params.samples} > {log} 2>&1"
