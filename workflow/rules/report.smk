# The paper's tables and plots from the evaluations of the profile; the summary and curves DVC compares.
# The figures and tables are in Snakemake's own report (`snakemake --report report.html`), with the
# captions of workflow/report/.


rule report:
    input:
        evaluations(),
        code=code("report"),
        # the metric's floor (FID of real images) comes from the reference statistics
        stats=[paths.stats(PROFILE, d, e) for d in PARAMS.datasets for e in PARAMS.eval.extractors],
    output:
        reports=report(
            directory(paths.REPORTS),
            patterns=["{dataset}/{name}.{ext,png|csv}"],
            caption="../report/results.rst",
            category="Results",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "file": "{name}.{ext}"},
        ),
        summary=report(
            paths.SUMMARY,
            caption="../report/summary.rst",
            category="Summary",
            labels={"file": "summary.json"},
        ),
        plots=directory(paths.PLOTS),
    log:
        LOGS + "/report.log",
    conda:
        "../../environment.yml"
    params:
        file=PARAMS_FILE,
        runs=paths.runs(PROFILE),
        report=config["report"],
        layout=[
            config["datasets"],
            config["variants"],
            config["eval"]["num_samples"],
            config["train_seeds"],
            config["duration_kimg"],
            config["snapshot_kimg"],
            config["eval"]["main"],
            config["eval"]["nfe_study"],
            config["pretrained"],
        ],
    shell:
        "fdm report --params {params.file} --runs {params.runs} --out {output.reports}"
        " --summary {output.summary} --plots {output.plots} > {log} 2>&1"


# MLflow, a view of the files above (docs/tracking.md): a run per model with its FID curves, nested
# evaluation runs, the report as artifacts. Best effort: with MLflow unreachable the marker says
# "logged": false and the job still succeeds; `fdm track` (or `snakemake --forcerun track`) logs
# everything later.
rule track:
    input:
        evaluations(),
        reports=paths.reports(PROFILE),
        code=code("track"),
    output:
        paths.TRACKED,
    log:
        LOGS + "/track.log",
    conda:
        "../../environment.yml"
    params:
        file=PARAMS_FILE,
        runs=paths.runs(PROFILE),
        tracking=config["tracking"],
    shell:
        "fdm track --params {params.file} --runs {params.runs} --reports {input.reports} --dest {output}"
        " > {log} 2>&1"
