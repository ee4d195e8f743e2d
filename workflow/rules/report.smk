# The paper's tables and plots from every metrics.json of the profile.


rule report:
    input:
        evaluations(),
    output:
        directory("reports"),
    log:
        "logs/report.log",
    conda:
        "../../environment.yml"
    params:
        file=PARAMS_FILE,
        report=config["report"],
        layout=[
            PARAMS.variants,
            PARAMS.duration_kimg,
            config["eval"]["main"],
            config["datasets"],
        ],
    shell:
        "fdm report --params {params.file} --runs runs --out {output} > {log} 2>&1"


# MLflow, a view of the files above (docs/tracking.md): a run per model, nested evaluation runs, the
# report as artifacts. Best effort: with MLflow unreachable the marker says "logged": false and the job
# still succeeds; `fdm track` (or `snakemake --forcerun track`) logs everything later.
rule track:
    input:
        evaluations(),
        rules.report.output,
    output:
        "mlflow_runs.json",
    log:
        "logs/track.log",
    conda:
        "../../environment.yml"
    params:
        file=PARAMS_FILE,
        tracking=config["tracking"],
    shell:
        "fdm track --params {params.file} --runs runs --reports reports --dest {output} > {log} 2>&1"
