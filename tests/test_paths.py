"""One definition of every artifact path (``fdm.paths``) and of the names (``fdm.names``).

dvc.yaml cannot import Python, so it spells the templates out: every path in it must be one of
``fdm.paths``' templates with ``${name}`` for ``{profile}`` and ``${item.<name>}`` for the other
``{<name>}`` (or a folder above one), and every template the pipeline uses must appear in it. The
params schema's enums must be ``fdm.names``'.
"""

import json
import re
from pathlib import Path

import yaml

from fdm import names, paths
from fdm.params_file import SCHEMA_PATH, derive, schema
from fdm.provenance import STAGES

ROOT = Path(__file__).resolve().parents[1]
PIPELINE_TEMPLATES = {
    "DATASET": paths.DATASET,
    "NETWORK": paths.NETWORK,
    "STATS": paths.STATS,
    "TRAIN_CONFIG": paths.TRAIN_CONFIG,
    "TRAINED": paths.TRAINED,
    "SNAPSHOTS": paths.SNAPSHOTS,
    "EVAL_PLAN": paths.EVAL_PLAN,
    "EVALUATED": paths.EVALUATED,
    "PRETRAINED_RECORD": paths.PRETRAINED_RECORD,
    "PRETRAINED_SNAPSHOTS": paths.PRETRAINED_SNAPSHOTS,
    "PRETRAINED_EVALUATED": paths.PRETRAINED_EVALUATED,
    "REPORTS": paths.REPORTS,
    "SUMMARY": paths.SUMMARY,
    "PLOTS": paths.PLOTS,
    "TRACKED": paths.TRACKED,
    "CODE": paths.CODE,
}


def as_dvc(template: str) -> str:
    """A template as dvc.yaml spells it: ``${name}`` for the profile, ``${item.<name>}`` for the others (a
    code digest's stage is the ``foreach`` item itself); a released checkpoint's kimg is the profile's
    ``${duration_kimg}`` (it is evaluated at the final milestone)."""
    if template.startswith(paths.PRETRAINED):
        template = template.replace("{kimg}", "${duration_kimg}")
    template = template.replace("{profile}", "${name}").replace("{stage}", "${item}")
    return re.sub(r"(?<!\$)\{(\w+)\}", r"${item.\1}", template)


def dvc_paths() -> set[str]:
    """Every path-like word of dvc.yaml's stages (commands, deps, outs, metrics)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    text = yaml.safe_dump(stages, width=10_000)
    return set(re.findall(r"(?<![\w/$.{])(?:(?:data|out)(?:/[\w${}.-]+)*)(?![\w])", text))


def test_every_dvc_path_is_a_template_of_the_path_module():
    converted = {as_dvc(t) for t in PIPELINE_TEMPLATES.values()} | {as_dvc(paths.RUN), as_dvc(paths.RUNS)}
    converted |= {
        as_dvc(paths.PRETRAINED),
        as_dvc(paths.EVAL_PLAN).replace("${item.kimg}", "${duration_kimg}"),
    }
    converted |= {paths.code(stage) for stage in STAGES}  # the heavy stages depend on their stage's digest
    allowed = set(converted)
    for template in converted:  # a stage may depend on a whole folder above a file
        parts = template.split("/")
        allowed |= {"/".join(parts[:i]) for i in range(1, len(parts))}
    found = dvc_paths()
    assert found, "no paths found in dvc.yaml"
    assert sorted(found - allowed) == []
    for name, template in PIPELINE_TEMPLATES.items():
        assert as_dvc(template) in found, f"dvc.yaml does not use paths.{name} ({as_dvc(template)})"


def test_dvc_plots_are_the_report_curves():
    """The top-level plots are the report's plot folders (one file per dataset of the profile)."""
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    folders = {next(iter(entry)) for entry in plots}
    assert folders == {as_dvc(paths.PLOTS) + "/fid_vs_mimg", as_dvc(paths.PLOTS) + "/fid_vs_nfe"}
    assert (ROOT / ".dvc/plots/series.json").is_file()


def test_snapshot_folders_are_where_training_writes():
    run = paths.run("digits", "edm", 0, paths.runs("smoke"))
    folder = paths.SNAPSHOTS.format(profile="smoke", dataset="digits", variant="edm", train_seed=0)
    assert paths.snapshot(run, 20) == f"{folder}/000020.safetensors"
    pretrained = paths.pretrained("digits", "edm", paths.runs("smoke"))
    assert paths.snapshot(pretrained, 20).startswith(
        paths.PRETRAINED_SNAPSHOTS.format(profile="smoke", dataset="digits", formulation="edm") + "/"
    )


def test_the_path_functions_fill_the_templates():
    identity = dict(
        profile="study", dataset="digits", variant="fdm_edm", train_seed=2, kimg=20, extractor="inception"
    )
    run = paths.run("digits", "fdm_edm", 2, paths.runs("study"))
    assert run == paths.RUN.format(**identity) == "out/study/runs/digits/fdm_edm/s2"
    assert paths.train_config("study", "digits", "fdm_edm", 2) == paths.TRAIN_CONFIG.format(**identity)
    assert paths.trained(run) == paths.TRAINED.format(**identity)
    assert paths.evaluated(run, 20) == paths.EVALUATED.format(**identity)
    assert paths.eval_plan("study", "digits", 20) == paths.EVAL_PLAN.format(**identity)
    assert (
        paths.stats_file("paper", "cifar10", "inception", "clean")
        == "out/paper/data/stats/cifar10/inception/clean.npz"
    )
    assert (
        paths.metrics(run, 20, "heun", 35) == "out/study/runs/digits/fdm_edm/s2/eval/20/heun-35/metrics.json"
    )
    assert paths.snapshot(run, 20) == "out/study/runs/digits/fdm_edm/s2/snapshots/000020.safetensors"
    assert paths.run("digits", "edm", 0, root="elsewhere") == "elsewhere/digits/edm/s0"
    assert (
        paths.tracked("study") == "out/study/mlflow_runs.json"
        and paths.code("train") == "data/code/train.json"
    )
    # What every profile shares is outside every profile's root.
    for shared in (paths.NETWORK, paths.CODE, paths.STORE):
        assert not shared.startswith("out/")


def test_the_schema_spells_the_names_of_the_names_module():
    definitions = schema()["$defs"]
    assert sorted(definitions["variant"]["enum"]) == sorted(names.FORMULATIONS)
    assert sorted(definitions["sampler"]["enum"]) == sorted(names.SAMPLERS)
    evaluation = schema()["properties"]["eval"]["properties"]
    assert sorted(evaluation["extractors"]["items"]["enum"]) == sorted(names.EXTRACTORS)
    assert sorted(evaluation["modes"]["items"]["enum"]) == sorted(names.INCEPTION_MODES)
    assert sorted(evaluation["nfe_study"]["properties"]) == sorted(names.SAMPLERS)
    metrics = schema()["properties"]["report"]["properties"]["metric"]["enum"]
    assert sorted(metrics) == sorted(names.metric_names(names.EXTRACTORS, names.INCEPTION_MODES))
    confirm = schema()["properties"]["report"]["properties"]["confirm"]["properties"]
    assert sorted(confirm["family"]["enum"]) == sorted(set(names.BASELINE.values()))


def test_the_schema_derives_the_formulations_from_the_names_module(monkeypatch):
    """The schema file names no formulation: it says where fdm.names' lists go, and they follow them."""
    raw = yaml.safe_load(SCHEMA_PATH.read_text())
    assert raw["$defs"]["variant"]["enum"] == {"$names": "FORMULATIONS"}
    assert raw["$defs"]["formulation_options"]["propertyNames"]["enum"] == {"$names": "OPTION_GROUPS"}
    written = json.dumps(raw)
    assert not [name for name in (*names.FORMULATIONS, *names.OPTION_GROUPS) if json.dumps(name) in written]
    assert schema()["$defs"]["formulation_options"]["propertyNames"]["enum"] == list(names.OPTION_GROUPS)
    monkeypatch.setattr(names, "FORMULATIONS", ("edm", "xy", "fdm_xy"))
    assert derive(raw)["$defs"]["variant"]["enum"] == ["edm", "xy", "fdm_xy"]


def test_nfe_rules():
    assert [names.nfe("heun", n) for n in (1, 2, 18, 40)] == [1, 3, 35, 79]
    assert [names.steps_for_nfe("dpmpp_3s", n) for n in (2, 25)] == [2, 25]
    for sampler, bad in [("heun", 8), ("dpmpp_3s", 1), ("euler", 0)]:
        try:
            names.steps_for_nfe(sampler, bad)
        except ValueError as err:
            assert f"NFE {bad}" in str(err)
        else:
            raise AssertionError(f"{sampler} took NFE {bad}")
