"""The params profiles and their schema: validation errors name the key, the paper profile carries the paper."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from fdm import names
from fdm.config import load_params
from fdm.errors import FdmError
from fdm.params_file import schema_file
from fdm.sampling import steps_for_nfe
from fdm.seeding import derive_seed

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ["params.yaml", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "config").glob("*.yaml"))]
SMOKE = (ROOT / "config" / "smoke.yaml").read_text()


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def edited_smoke(tmp_path, old: str, new: str) -> Path:
    assert SMOKE.count(old) == 1, old
    return write(tmp_path, SMOKE.replace(old, new))


@pytest.mark.parametrize("profile", PROFILES)
def test_profiles_validate_in_fdm_and_in_snakemake(profile):
    from snakemake.utils import validate

    params = load_params(ROOT / profile)
    assert params.models()
    with schema_file() as schema:
        validate(yaml.safe_load((ROOT / profile).read_text()), schema)


def test_snakemake_validates_against_the_names_of_the_names_module():
    """Snakemake's validate reads the derived schema: every formulation of fdm.names passes, others fail."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    data = yaml.safe_load(SMOKE)
    with schema_file() as schema:
        data["train"]["variants"] = {name: {"formulation": name} for name in names.FORMULATIONS}
        validate(data, schema)
        data["train"]["variants"] = {"x": {"formulation": "ddpm"}}
        with pytest.raises(WorkflowError, match="'ddpm' is not one of"):
            validate(data, schema)


def test_params_yaml_is_the_smoke_profile():
    assert (ROOT / "params.yaml").read_bytes() == (ROOT / "config" / "smoke.yaml").read_bytes()


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        ("    lr: 1.0e-3", "    lr: abc", "train.defaults.lr: 'abc' is not of type 'number'"),
        (
            "    lr: 1.0e-3",
            "    lr: 1e-3",
            "train.defaults.lr: '1e-3' is not of type 'number' (YAML 1.1 reads",
        ),
        ("    lr: 1.0e-3", "    lr: 1.0e-3\n    trian: 3", "train.defaults: unknown key 'trian'"),
        ("seed: 0 ", "trian: 1\nseed: 0 ", "unknown key 'trian'"),
        ("    cond: true ", "    cond: true\n    colour: 1 ", "datasets.digits: unknown key 'colour'"),
        ("    ve: {arch: ncsnpp}", "    ve: {arhc: ncsnpp}", "train.variants.ve: unknown key 'arhc'"),
        (
            "    ve: {arch: ncsnpp}",
            "    vee: {arch: ncsnpp}",
            "train.variants.vee: not a variant of this profile (edm, fdm_edm, vp, fdm_vp, ve, fdm_ve)",
        ),
        ("    ve: {arch: ncsnpp}", "    ve: {arch: ncsnp}", "train.variants.ve.arch: unknown value 'ncsnp'"),
        (
            "    ve: {arch: ncsnpp}",
            "    ve: {arch: ncsnpp, formulation: ddpm}",
            f"train.variants.ve.formulation: unknown value 'ddpm' (expected one of {', '.join(names.FORMULATIONS)})",
        ),
        (
            "variants: [edm,",
            "variants: [edn,",
            f"variants: 'edn' is not a formulation's name ({', '.join(names.FORMULATIONS)}): give train.variants.edn",
        ),
        (
            "      fdm: {multiplier",
            "      fmd: {multiplier",
            f"train.defaults.formulation_options: unknown key 'fmd' (expected one of {', '.join(names.OPTION_GROUPS)})",
        ),
        (
            "      fdm: {multiplier: 2.0,",
            "      fdm: {multiplier: [2.0],",
            "train.defaults.formulation_options.fdm.multiplier: [2.0] is not of type 'number', 'string', 'boolean'",
        ),
        (
            "    ve: {arch: ncsnpp}",
            "    ve: {arch: ncsnpp, formulation_options: {fdm: {multiplier: 1.0}}}",
            "train.variants.ve.formulation_options.fdm: not an option group of ve (ve)",
        ),
        (
            "  compare_paper: false",
            "  compare_paper: false\n  ablations: [{name: m, setting: fdm.multiplier, variants: [fdm_edm, fdm_x]}]",
            "report.ablations[0].variants: 'fdm_x' is not a variant of this profile",
        ),
        (
            "  compare_paper: false",
            "  compare_paper: false\n  ablations: [{name: c, setting: fdm.cin, variants: [fdm_edm, fdm_vp]}]",
            "report.ablations[0]: fdm_edm does not set formulation_options.fdm.cin for digits: each variant",
        ),
        (
            "  compare_paper: false",
            "  compare_paper: false\n  ablations: [{name: c, setting: fmd.cin, variants: [fdm_edm, fdm_vp]}]",
            f"report.ablations[0].setting: 'fmd' is not an option group ({', '.join(names.OPTION_GROUPS)})",
        ),
        (
            "  compare_paper: false",
            "  compare_paper: false\n  ablations: [{name: c, setting: lrr, variants: [fdm_edm, fdm_vp]}]",
            "report.ablations[0].setting: 'lrr' is neither a training setting (lr, dropout,",
        ),
        (
            "  compare_paper: false",
            "  compare_paper: false\n  confirm: {family: edm, images: 30}",
            "report.confirm.images: 30 kimg is not a snapshot of this profile (snapshot_kimg: 10, 20)",
        ),
        (
            "  compare_paper: false",
            "  compare_paper: false\n  confirm: {family: edm, images: 10}",
            "report.confirm.images: FDM is read at half of 10 kimg, which is not a snapshot",
        ),
        (
            "  compare_paper: false",
            "  compare_paper: false\n  confirm: {family: fdm_edm, images: 20}",
            "report.confirm.family: unknown value 'fdm_edm'",
        ),
        (
            "  compare_paper: false",
            "  compare_paper: false\n  confirm: {family: edm, kimg: 20}",
            "report.confirm: unknown key 'kimg'",
        ),
        ("    lr: 1.0e-3\n", "", "train.defaults: missing key 'lr'"),
        ("    lr: 1.0e-3", "    lr: 0", "train.defaults.lr: 0 is less than or equal to the minimum of 0"),
        ("  digits:\n    source", "  Digits:\n    source", "datasets: bad name 'Digits'"),
        (
            "    heun: [7, 15]",
            "    heun: [8, 15]",
            "eval.nfe_study.heun[0]: 8 is even; Heun's NFE is 2 * steps - 1",
        ),
        ("nfe: 15}", "nfe: 14}", "eval.main.digits.nfe: 14 is even"),
        (
            "    dpmpp_3s: [5, 10]",
            "    dpmpp_3s: [1, 10]",
            "eval.nfe_study.dpmpp_3s[0]: 1 is less than the minimum of 2",
        ),
        ("    dpmpp_3s: [5, 10]", "    dpmp_3s: [5, 10]", "eval.nfe_study: unknown key 'dpmp_3s'"),
        (
            "    digits: {sampler",
            "    digitz: {sampler",
            "eval.main.digitz: not a dataset of this profile (digits)",
        ),
        (
            "snapshot_kimg: [10, 20]",
            "snapshot_kimg: [10, 15]",
            "snapshot_kimg: [10, 15] must increase and end at",
        ),
        (
            "snapshot_kimg: [10, 20]",
            "snapshot_kimg: [10, 20, 30]",
            "snapshot_kimg: 30 lies beyond duration_kimg (20)",
        ),
        (
            "  metric: fid_digitsnet",
            "  metric: fid_inception_clean",
            "report.metric: 'fid_inception_clean' is not",
        ),
        (
            "  modes: [clean]",
            "  modes: [legacy_tensorflow]",
            "eval.modes: modes other than clean apply to the",
        ),
        (
            "    resolution: 16",
            "    resolution: 16\n    resolution: 32",
            "not valid YAML: duplicate key 'resolution'",
        ),
        ("    num_blocks: 1", "    num_blocks: [1", "not valid YAML: "),
        # The profile's name is a folder: out/<name>/.
        ("name: smoke ", "name: a/b ", "name: 'a/b' is not a safe folder name"),
        ("name: smoke ", "name: ../smoke ", "name: '../smoke' is not a safe folder name"),
        ("name: smoke ", "name: a..b ", "name: 'a..b' is not a safe folder name"),
        ("name: smoke ", "name: 'my study' ", "name: 'my study' is not a safe folder name"),
        ("name: smoke ", "name: 3 ", "name: 3 is not of type 'string'"),
        ("name: smoke ", "", "missing key 'name'"),
    ],
)
def test_errors_are_one_line_naming_the_key(tmp_path, old, new, reason):
    path = edited_smoke(tmp_path, old, new)
    with pytest.raises(FdmError) as err:
        load_params(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {reason}"), message
    assert "\n" not in message


def test_confirm_names_the_pre_registered_comparison_and_a_family_not_trained_is_refused(tmp_path):
    params = load_params(ROOT / "config" / "confirm.yaml")
    confirm = params.report.confirm
    assert (confirm.family, confirm.images, confirm.fdm, confirm.baseline, confirm.half) == (
        "edm",
        160,
        "fdm_edm",
        "edm",
        80,
    )
    assert load_params(ROOT / "config" / "study.yaml").report.confirm is None
    text = (ROOT / "config" / "confirm.yaml").read_text()
    path = write(
        tmp_path, text.replace("confirm: {family: edm, images: 160}", "confirm: {family: vp, images: 160}")
    )
    with pytest.raises(FdmError) as err:
        load_params(path)
    assert str(err.value) == (
        f"{path}: report.confirm.family: 'vp' needs variants vp and fdm_vp, which this profile does not train "
        "(variants: edm, fdm_edm)"
    )
    # An ablation variant of FDM-EDM named otherwise is not the pre-registered fdm_edm.
    renamed = text.replace("variants: [edm, fdm_edm]", "variants: [edm, fdm_edm_m1]").replace(
        "train:\n", "train:\n  variants:\n    fdm_edm_m1: {formulation: fdm_edm}\n"
    )
    with pytest.raises(FdmError, match="report.confirm.family: 'edm' needs variants edm and fdm_edm"):
        load_params(write(tmp_path, renamed))


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(FdmError, match="params file not found: .*nope.yaml"):
        load_params(tmp_path / "nope.yaml")
    with pytest.raises(FdmError, match=r"p.yaml: \[1, 2\] is not of type 'object'"):
        load_params(write(tmp_path, "[1, 2]\n"))


@pytest.mark.parametrize("sampler", ["heun", "euler", "dpmpp_3s", "dpmpp_2m"])
def test_schema_nfe_rule_agrees_with_the_samplers(tmp_path, sampler):
    """The schema's NFE constraints accept exactly the NFEs fdm.sampling can realise."""
    data = yaml.safe_load(SMOKE)
    for nfe in range(1, 40):
        data["eval"]["nfe_study"] = {sampler: [nfe]}
        data["eval"]["main"]["digits"] = {"sampler": sampler, "nfe": nfe}
        try:
            steps_for_nfe(sampler, nfe)
            feasible = True
        except ValueError:
            feasible = False
        path = write(tmp_path, yaml.safe_dump(data))
        if feasible:
            load_params(path)
        else:
            with pytest.raises(FdmError, match=r"eval\."):
                load_params(path)


def test_layers_override_in_order(tmp_path):
    """defaults < variants.<v> < datasets.<d> < datasets.<d>.variants.<v>."""
    data = yaml.safe_load(SMOKE)
    data["train"]["defaults"]["lr"] = 1.0
    data["train"]["variants"]["vp"]["lr"] = 2.0
    data["train"]["variants"]["ve"]["lr"] = 2.0
    data["train"]["datasets"] = {"digits": {"lr": 3.0, "variants": {"ve": {"lr": 4.0}}}}
    params = load_params(write(tmp_path, yaml.safe_dump(data)))
    assert params.train_config("digits", "edm", 0)["lr"] == 3.0
    assert params.train_config("digits", "vp", 0)["lr"] == 3.0
    assert params.train_config("digits", "ve", 0)["lr"] == 4.0
    del data["train"]["datasets"]
    params = load_params(write(tmp_path, yaml.safe_dump(data)))
    assert [params.train_config("digits", v, 0)["lr"] for v in ("edm", "vp", "ve")] == [1.0, 2.0, 2.0]


def test_train_config_is_a_training_config_and_seeds_are_shared_by_the_variants():
    """A job's seed is derive_seed(seed, dataset, train_seed): one per (dataset, training seed), the same
    for every variant (a variant and its baseline are paired: tests/test_pairing.py), none shared across
    datasets or training seeds."""
    from fdm.diffusion import formulation
    from fdm.training import TrainConfig

    for profile in PROFILES[1:]:
        params = load_params(ROOT / profile)
        seeds = {}
        for dataset, variant, train_seed in params.models():
            values = params.train_config(dataset, variant, train_seed)
            config = TrainConfig.from_dict({**values, "dataset": "d.zip", "outdir": "out"})
            assert config.formulation == params.formulation(variant)
            assert config.seed == derive_seed(params.seed, dataset, train_seed)
            built = formulation(config.formulation, **config.formulation_options)  # the options are its own
            assert built.name == config.formulation
            seeds.setdefault((dataset, train_seed), set()).add(config.seed)
        assert all(len(shared) == 1 for shared in seeds.values())
        assert len(set.union(*seeds.values())) == len(params.datasets) * len(params.train_seeds)


def test_unknown_job_and_frozen_params():
    params = load_params(ROOT / "params.yaml")
    with pytest.raises(FdmError, match="no dataset 'cifar10'"):
        params.train_config("cifar10", "edm", 0)
    with pytest.raises(FdmError, match="no variant 'foo'"):
        params.train_config("digits", "foo", 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.seed = 1
    with pytest.raises(TypeError):
        params.train.defaults["lr"] = 1.0
    params.train_config("digits", "edm", 0)["channel_mult"].append(9)  # a copy: the params stay as read
    assert params.train_config("digits", "edm", 0)["channel_mult"] == [1, 2]


def test_smoke_grid():
    params = load_params(ROOT / "params.yaml")
    assert params.variants == ("edm", "fdm_edm", "vp", "fdm_vp", "ve", "fdm_ve")
    assert params.points("digits", 10) == [("heun", 15)]
    assert params.points("digits", 20) == [("dpmpp_3s", 5), ("dpmpp_3s", 10), ("heun", 7), ("heun", 15)]
    assert params.eval.metric_names() == ("fid_digitsnet", "kid_digitsnet")
    assert params.eval.spaces() == [("digitsnet", "native")]
    plan = params.eval_plan("digits", 20)
    assert plan["stats"] == ["out/smoke/data/stats/digits/digitsnet/native.npz"]
    assert plan["networks"] == {"digitsnet": "data/networks/digitsnet"}
    assert (plan["seeds"], plan["batch"], plan["keep_samples"]) == ("0-127", 128, False)


def test_paper_profile_carries_the_paper():
    """The hyperparameters of the authors' README commands and train.py (arXiv 2306.06991; docs/profiles.md)."""
    params = load_params(ROOT / "config" / "paper.yaml")
    assert list(params.datasets) == ["cifar10", "ffhq", "afhqv2"]
    assert [(d.resolution, d.channels, d.cond) for d in params.datasets.values()] == [
        (32, 3, True),
        (64, 3, False),
        (64, 3, False),
    ]
    assert params.duration_kimg == 200000
    assert params.snapshot_kimg == (50000, 100000, 150000, 200000)

    def job(dataset, variant):
        return params.train_config(dataset, variant, 0)

    per_dataset = {
        "cifar10": (512, 1e-3, 0.13, 0.12),
        "ffhq": (256, 2e-4, 0.05, 0.15),
        "afhqv2": (256, 2e-4, 0.25, 0.15),
    }
    for dataset, expected in per_dataset.items():
        for variant in params.variants:
            c = job(dataset, variant)
            assert (c["batch"], c["lr"], c["dropout"], c["augment_p"]) == expected
            assert (c["lr_rampup_kimg"], c["ema_halflife_kimg"], c["ema_rampup_ratio"]) == (10000, 500, 0.05)
            assert (c["model_channels"], c["num_blocks"], c["attn_resolutions"]) == (128, 4, [16])
            assert c["arch"] == ("ncsnpp" if variant.endswith("ve") else "ddpmpp")
            assert (c["precision"], c["label_dropout"]) == ("fp32", 0.0)
            cifar_edm = dataset == "cifar10" and variant in ("edm", "fdm_edm")
            assert c["channel_mult"] == ([2, 2, 2] if cifar_edm else [1, 2, 2, 2])
    fdm = {
        ("cifar10", "fdm_edm"): (2.0, 200),
        ("cifar10", "fdm_vp"): (2.0, 400),
        ("cifar10", "fdm_ve"): (1.0, 400),
        ("ffhq", "fdm_edm"): (1.0, 800),
        ("ffhq", "fdm_vp"): (1.0, 400),
        ("ffhq", "fdm_ve"): (1.0, 400),
        ("afhqv2", "fdm_edm"): (2.0, 400),
        ("afhqv2", "fdm_vp"): (2.0, 400),
        ("afhqv2", "fdm_ve"): (1.0, 400),
    }
    for (dataset, variant), (multiplier, warmup) in fdm.items():
        assert job(dataset, variant)["formulation_options"] == {"multiplier": multiplier, "warmup": warmup}
        assert job(dataset, variant.removeprefix("fdm_"))["formulation_options"] == {}
    evaluation = params.eval
    assert {d: (p.sampler, p.nfe) for d, p in evaluation.main.items()} == {
        "cifar10": ("heun", 35),
        "ffhq": ("heun", 79),
        "afhqv2": ("heun", 79),
    }
    assert dict(evaluation.nfe_study) == {"heun": (25, 49, 79), "dpmpp_3s": (25, 49, 79)}
    assert evaluation.num_samples == 50000
    assert (evaluation.extractors, evaluation.modes) == (("inception",), ("clean", "legacy_tensorflow"))
    assert (params.report.metric, params.report.compare_paper) == ("fid_inception_legacy_tensorflow", True)


def test_every_option_of_every_formulation_is_set_from_a_profile(tmp_path):
    """For each formulation of fdm.names and each of its options: a profile that sets it (in the group of
    the class that has it) trains the formulation with it, and the variants it does not apply to without it."""
    from fdm.diffusion import FDM, REGISTRY, formulation, options

    for name in names.FORMULATIONS:
        for key, default in options(name).items():
            group = names.FDM if key in FDM.options() else names.base_of(name)
            value = "scale" if key == "cin" else default + 1 if isinstance(default, int) else default * 1.25
            data = yaml.safe_load(SMOKE)
            data["variants"] = [name]
            data["train"]["variants"] = {
                name: {"arch": "ddpmpp", "formulation_options": {group: {key: value}}}
            }
            params = load_params(write(tmp_path, yaml.safe_dump(data)))
            options_given = params.train_config("digits", name, 0)["formulation_options"]
            assert options_given[key] == value, (name, key)
            assert formulation(name, **options_given).config()[key] == value
    assert set(REGISTRY) == set(names.BASES)


def test_option_groups_apply_to_their_formulations_only(tmp_path):
    """fdm options reach FDM variants only, a base's reach it and its FDM variant, layered key by key."""
    data = yaml.safe_load(SMOKE)
    data["train"]["defaults"]["formulation_options"] = {
        "fdm": {"multiplier": 2.0, "warmup": 50},
        "edm": {"P_mean": -1.0, "P_std": 1.4},
    }
    data["train"]["datasets"] = {
        "digits": {"variants": {"fdm_edm": {"formulation_options": {"edm": {"P_std": 1.0}}}}}
    }
    params = load_params(write(tmp_path, yaml.safe_dump(data)))
    options = {v: params.train_config("digits", v, 0)["formulation_options"] for v in params.variants}
    assert options["edm"] == {"P_mean": -1.0, "P_std": 1.4}
    assert options["fdm_edm"] == {"P_mean": -1.0, "P_std": 1.0, "multiplier": 2.0, "warmup": 50}
    assert options["vp"] == {} and options["fdm_vp"] == {"multiplier": 2.0, "warmup": 50}
    assert options["fdm_ve"] == {"multiplier": 1.0, "warmup": 50}  # its own layer overrides one key
    assert params.setting("digits", "fdm_ve", "fdm.multiplier") == 1.0
    assert (
        params.setting("digits", "fdm_edm", "edm.P_std") == 1.0
        and params.setting("digits", "ve", "lr") == 1e-3
    )
    assert params.setting("digits", "edm", "fdm.cin") is None
