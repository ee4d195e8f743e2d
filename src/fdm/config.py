"""The params file (``params.yaml``, ``config/*.yaml``): load, validate, and resolve per-job settings.

A profile is read and checked against its JSON Schema by ``fdm.params_file``, then here against the
cross-references a schema cannot express (milestones, dataset names, NFE points, the report metric).
Any problem is one ``FdmError`` line naming the file and the key, e.g.
``params.yaml: train.defaults.lr: 'abc' is not of type 'number'``. The module does not import
torch, so a Snakefile can read params cheaply.

Training settings are layered (docs/profiles.md): ``train.defaults``, then ``train.variants.<variant>``,
then ``train.datasets.<dataset>``, then ``train.datasets.<dataset>.variants.<variant>``; a later layer
overrides a setting, and one option of ``formulation_options`` at a time. This is how the paper's
hyperparameter table (arXiv 2306.06991, appendix; docs/profiles.md) is written down: the learning rate
per dataset, the architecture per variant, FDM's warmup and multiplier per (dataset, variant).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from fdm import names, paths
from fdm.errors import FdmError
from fdm.params_file import read_yaml, schema_error

ABLATION_SETTINGS = (
    "lr",
    "dropout",
    "augment_p",
    "ema_halflife_kimg",
    "model_channels",
    "num_blocks",
    "batch",
)
"""The training settings an ablation axis may vary; formulation options are named ``<group>.<option>``."""


def _freeze(value):
    """Read-only copy: mappings become MappingProxyType, lists tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value):
    """Plain JSON-able copy of a frozen value: dicts and lists."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One dataset: ``data/<name>.zip`` made by ``fdm prepare <source>``."""

    name: str
    source: str
    resolution: int
    channels: int
    cond: bool
    raw: str | None = None


@dataclasses.dataclass(frozen=True)
class EvalPoint:
    """A sampler and its number of denoiser evaluations."""

    sampler: str
    nfe: int


@dataclasses.dataclass(frozen=True)
class Eval:
    num_samples: int
    batch: int
    extractors: tuple[str, ...]
    modes: tuple[str, ...]
    main: Mapping[str, EvalPoint]
    nfe_study: Mapping[str, tuple[int, ...]]
    keep_samples: bool

    def metric_names(self) -> tuple[str, ...]:
        """Every metric an evaluation writes."""
        return names.metric_names(self.extractors, self.modes)

    def spaces(self) -> list[tuple[str, str]]:
        """(extractor, mode) of every feature space an evaluation is scored in, in profile order."""
        return [(e, mode) for e in self.extractors for mode in names.modes(e, self.modes)]


@dataclasses.dataclass(frozen=True)
class Train:
    """The four layers of training settings (see the module docstring)."""

    defaults: Mapping
    variants: Mapping[str, Mapping]
    datasets: Mapping[str, Mapping]

    def settings(self, dataset: str, variant: str) -> dict:
        """The merged settings of one (dataset, variant): later layers override earlier ones."""
        per_dataset = dict(self.datasets.get(dataset, {}))
        per_job = per_dataset.pop("variants", {}).get(variant, {})
        merged = {}
        for layer in (self.defaults, self.variants.get(variant, {}), per_dataset, per_job):
            _merge(merged, _thaw(layer))
        return merged


def _merge(merged: dict, layer: dict) -> None:
    """``layer`` over ``merged``, in place: mappings key by key (``formulation_options``), else replaced."""
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            _merge(merged[key], value)
        else:
            merged[key] = value


@dataclasses.dataclass(frozen=True)
class Tracking:
    enabled: bool
    experiment_prefix: str

    def experiment(self, dataset: str) -> str:
        """MLflow experiment of a dataset."""
        return f"{self.experiment_prefix}-{dataset}"


@dataclasses.dataclass(frozen=True)
class Ablation:
    """One axis of an ablation: ``variants`` that differ in the training setting ``setting``."""

    name: str
    setting: str
    variants: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Confirm:
    """The pre-registered comparison (``report.confirm``): ``fdm`` at ``images / 2`` kimg against
    ``baseline`` at ``images`` kimg, paired by training seed."""

    family: str
    images: int

    @property
    def baseline(self) -> str:
        return self.family

    @property
    def fdm(self) -> str:
        """The FDM formulation over ``family`` (names.BASELINE read backwards), a variant of that name."""
        return next(fdm for fdm, base in names.BASELINE.items() if base == self.family)

    @property
    def half(self) -> int:
        return self.images // 2


@dataclasses.dataclass(frozen=True)
class Report:
    metric: str
    compare_paper: bool
    ablations: tuple[Ablation, ...] = ()
    confirm: Confirm | None = None


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """A released checkpoint the profile evaluates: an EDM/FDM training pickle of ``formulation``."""

    dataset: str
    formulation: str
    url: str
    sha256: str | None = None


@dataclasses.dataclass(frozen=True)
class Gpus:
    """GPUs per job (Snakemake's ``resources: gpu``); more than one runs the job under torchrun."""

    train: int
    evaluate: int


@dataclasses.dataclass(frozen=True)
class Params:
    """A validated profile. Build it with ``load_params(path)``."""

    path: str
    name: str  # the profile's name: its outputs go under out/<name>/ (fdm.paths)
    seed: int
    datasets: Mapping[str, Dataset]
    variants: tuple[str, ...]
    train_seeds: tuple[int, ...]
    duration_kimg: int
    snapshot_kimg: tuple[int, ...]
    train: Train
    eval: Eval
    tracking: Tracking
    report: Report
    gpus: Gpus
    pretrained: tuple[Pretrained, ...] = ()

    def seed_for(self, dataset: str, train_seed: int) -> int:
        """The seed of the training jobs of ``dataset`` with training seed ``train_seed``
        (``fdm.seeding.derive_seed``), shared by every variant: a variant and its baseline trained with
        the same training seed start from the same weights (where their networks are alike) and see the
        same data order, noise levels, noise and augmentation, so their comparison is paired
        (docs/report.md, "Paired differences"). Unrelated across datasets and training seeds.
        """
        from fdm.seeding import derive_seed

        return derive_seed(self.seed, dataset, train_seed)

    def train_config(self, dataset: str, variant: str, train_seed: int) -> dict:
        """Settings of one training job as ``fdm.training.TrainConfig`` fields, minus ``dataset`` and ``outdir``.

        Only what shapes the model: where and how it runs (device, GPUs, tracking) is the command's. Pipeline
        jobs never log live to MLflow; the ``track`` step logs every file once, after the jobs ran.

        ``formulation_options`` holds the options of the groups that apply to the variant's formulation
        (``fdm.names.option_groups``: edm's and fdm's for fdm_edm), as one mapping; the formulation checks
        them when training builds it. Groups of other formulations are not its settings (the authors'
        train.py passes FDM's multiplier and warmup to the FDM preconditioners only).
        """
        self._check_job(dataset, variant)
        settings = self.train.settings(dataset, variant)
        formulation = settings.pop("formulation", variant)
        groups = settings.pop("formulation_options", {})
        return {
            "formulation": formulation,
            "formulation_options": {
                key: value
                for group in names.option_groups(formulation)
                for key, value in groups.get(group, {}).items()
            },
            **settings,
            "cond": self.datasets[dataset].cond,
            "duration_kimg": self.duration_kimg,
            "snapshot_kimg": list(self.snapshot_kimg),
            "seed": self.seed_for(dataset, train_seed),
        }

    def setting(self, dataset: str, variant: str, name: str):
        """A variant's value of a training setting (``lr``) or a formulation option (``fdm.multiplier``),
        None where the profile does not set it."""
        settings = self.train.settings(dataset, variant)
        group, dot, option = name.partition(".")
        return (
            settings.get("formulation_options", {}).get(group, {}).get(option) if dot else settings.get(name)
        )

    def formulation(self, variant: str) -> str:
        """The formulation a variant trains (its ``formulation`` setting, else its name)."""
        return self.train.variants.get(variant, {}).get("formulation", variant)

    def baseline(self, variant: str) -> str | None:
        """The variant an FDM variant is measured against: the one named after its base formulation
        (``edm`` for ``fdm_edm`` or an ablation's ``fdm_edm_m1``), when the profile trains it."""
        base = names.BASELINE.get(self.formulation(variant))
        return base if base in self.variants else None

    def released(self, dataset: str, formulation: str) -> Pretrained:
        """The profile's released checkpoint of ``formulation`` on ``dataset``."""
        for entry in self.pretrained:
            if (entry.dataset, entry.formulation) == (dataset, formulation):
                return entry
        raise FdmError(f"{self.path}: pretrained has no {formulation} checkpoint of {dataset}")

    def models(self) -> list[tuple[str, str, int]]:
        """Every trained model (dataset, variant, train_seed), in profile order."""
        return [(d, v, s) for d in self.datasets for v in self.variants for s in self.train_seeds]

    def points(self, dataset: str, kimg: int) -> list[tuple[str, int]]:
        """(sampler, nfe) evaluated at snapshot ``kimg`` of every model of ``dataset``, sorted.

        The main sampler and NFE at every snapshot (FID vs Mimg), plus the NFE study at the final one.
        """
        main = self.eval.main[dataset]
        points = {(main.sampler, main.nfe)}
        if kimg == self.duration_kimg:
            points |= {(sampler, nfe) for sampler, nfes in self.eval.nfe_study.items() for nfe in nfes}
        return sorted(points)

    def eval_plan(self, dataset: str, kimg: int) -> dict:
        """The evaluation of snapshot ``kimg`` of every model of ``dataset`` (``fdm evaluate --config``).

        Its points, seeds and scoring; written by ``fdm eval-config`` to ``fdm.paths.eval_plan``,
        whose bytes change only when this snapshot's evaluations do.
        """
        if dataset not in self.datasets:
            raise FdmError(f"{self.path}: no dataset {dataset!r} (datasets: {', '.join(self.datasets)})")
        if kimg not in self.snapshot_kimg:
            kimgs = ", ".join(str(k) for k in self.snapshot_kimg)
            raise FdmError(f"{self.path}: no snapshot at {kimg} kimg (snapshot_kimg: {kimgs})")
        return {
            "dataset": dataset,
            "kimg": kimg,
            "points": [{"sampler": sampler, "nfe": nfe} for sampler, nfe in self.points(dataset, kimg)],
            "seeds": f"0-{self.eval.num_samples - 1}",
            "batch": self.eval.batch,
            "stats": [paths.stats_file(self.name, dataset, e, mode) for e, mode in self.eval.spaces()],
            "networks": {e: paths.network(e) for e in self.eval.extractors},
            "keep_samples": self.eval.keep_samples,
        }

    def _check_job(self, dataset: str, variant: str) -> None:
        if dataset not in self.datasets:
            raise FdmError(f"{self.path}: no dataset {dataset!r} (datasets: {', '.join(self.datasets)})")
        if variant not in self.variants:
            raise FdmError(f"{self.path}: no variant {variant!r} (variants: {', '.join(self.variants)})")


def _cross_check(path, data: dict) -> None:
    """What the schema cannot say; each failure is one line naming the key."""

    def fail(key: str, message: str):
        raise FdmError(f"{path}: {key}: {message}")

    def check_nfe(key: str, sampler: str, nfe: int):
        try:
            names.steps_for_nfe(sampler, nfe)
        except ValueError as err:
            fail(key, f"NFE {nfe}: {err}")

    name = data["name"]
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or ".." in name:
        fail(
            "name",
            f"{name!r} is not a safe folder name (letters, digits, '.', '_', '-'; no '/', '..' or spaces)",
        )
    kimg, duration = data["snapshot_kimg"], data["duration_kimg"]
    beyond = [k for k in kimg if k > duration]
    if beyond:
        fail(
            "snapshot_kimg", f"{beyond[0]} lies beyond duration_kimg ({duration}): training never gets there"
        )
    if kimg != sorted(kimg) or kimg[-1] != duration:
        fail("snapshot_kimg", f"{kimg} must increase and end at duration_kimg ({duration})")
    datasets = list(data["datasets"])
    for key in data["train"].get("datasets", {}):
        if key not in datasets:
            fail(f"train.datasets.{key}", f"not a dataset of this profile ({', '.join(datasets)})")
    main = data["eval"]["main"]
    for key in main:
        if key not in datasets:
            fail(f"eval.main.{key}", f"not a dataset of this profile ({', '.join(datasets)})")
    for name in datasets:
        if name not in main:
            fail("eval.main", f"missing key {name!r} (every dataset needs its main sampler and NFE)")
    for key, point in main.items():
        check_nfe(f"eval.main.{key}", point["sampler"], point["nfe"])
    for sampler, nfes in data["eval"]["nfe_study"].items():
        for nfe in nfes:
            check_nfe(f"eval.nfe_study.{sampler}", sampler, nfe)
    extractors, modes = data["eval"]["extractors"], data["eval"]["modes"]
    metrics = names.metric_names(extractors, modes)
    if data["report"]["metric"] not in metrics:
        fail(
            "report.metric",
            f"{data['report']['metric']!r} is not computed (eval computes {', '.join(metrics)})",
        )
    train = data["train"]
    if "formulation" in train["defaults"]:
        fail("train.defaults.formulation", "a variant's formulation is set in train.variants.<variant> only")
    for name, layer in train.get("datasets", {}).items():
        if "formulation" in layer or any("formulation" in v for v in layer.get("variants", {}).values()):
            fail(f"train.datasets.{name}", "a variant's formulation is set in train.variants.<variant> only")
    known = set(data["variants"]) | set(names.FORMULATIONS)
    layers = {"train.variants": train.get("variants", {})}
    layers |= {
        f"train.datasets.{d}.variants": v.get("variants", {}) for d, v in train.get("datasets", {}).items()
    }
    for where, layer in layers.items():
        for variant in layer:
            if variant not in known:
                fail(f"{where}.{variant}", f"not a variant of this profile ({', '.join(data['variants'])})")
    for variant in data["variants"]:
        if variant not in names.FORMULATIONS and "formulation" not in layers["train.variants"].get(
            variant, {}
        ):
            fail(
                "variants",
                f"{variant!r} is not a formulation's name ({', '.join(names.FORMULATIONS)}): "
                f"give train.variants.{variant}.formulation",
            )

    def formulation_of(variant):
        return train.get("variants", {}).get(variant, {}).get("formulation", variant)

    for where, layer in layers.items():
        for variant, settings in layer.items():
            for group in settings.get("formulation_options", {}):
                if group not in names.option_groups(formulation_of(variant)):
                    fail(
                        f"{where}.{variant}.formulation_options.{group}",
                        f"not an option group of {formulation_of(variant)} "
                        f"({', '.join(names.option_groups(formulation_of(variant)))})",
                    )
    for i, axis in enumerate(data["report"].get("ablations", [])):
        for variant in axis["variants"]:
            if variant not in data["variants"]:
                fail(f"report.ablations[{i}].variants", f"{variant!r} is not a variant of this profile")
        group, dot, option = axis["setting"].partition(".")
        if not dot and group not in ABLATION_SETTINGS:
            fail(
                f"report.ablations[{i}].setting",
                f"{group!r} is neither a training setting ({', '.join(ABLATION_SETTINGS)}) "
                "nor a formulation option <group>.<option>",
            )
        if dot and group not in names.OPTION_GROUPS:
            fail(
                f"report.ablations[{i}].setting",
                f"{group!r} is not an option group ({', '.join(names.OPTION_GROUPS)})",
            )
        for variant in axis["variants"] if dot else ():
            for dataset in datasets:
                if _setting(train, dataset, variant, group, option) is None:
                    fail(
                        f"report.ablations[{i}]",
                        f"{variant} does not set formulation_options.{group}.{option} for {dataset}: "
                        "each variant of an axis states its value",
                    )
    confirm = data["report"].get("confirm")
    if confirm is not None:
        _check_confirm(fail, Confirm(**confirm), data)
    released = set()
    for i, entry in enumerate(data["pretrained"]):
        if entry["dataset"] not in datasets:
            fail(f"pretrained[{i}].dataset", f"{entry['dataset']!r} is not a dataset of this profile")
        if (entry["dataset"], entry["formulation"]) in released:
            fail(f"pretrained[{i}]", f"a second {entry['formulation']} checkpoint of {entry['dataset']}")
        released.add((entry["dataset"], entry["formulation"]))
    if "inception" not in extractors and modes != ["clean"]:
        fail("eval.modes", "modes other than clean apply to the inception extractor only")


def _setting(train: dict, dataset: str, variant: str, group: str, option: str):
    """A formulation option of (dataset, variant) in the raw ``train`` section, or None (as ``Params.setting``)."""
    layers = Train(train["defaults"], train.get("variants", {}), train.get("datasets", {}))
    return layers.settings(dataset, variant).get("formulation_options", {}).get(group, {}).get(option)


def _check_confirm(fail, confirm: Confirm, data: dict) -> None:
    """The pre-registered comparison must be one the profile trains and snapshots."""
    variants = data["variants"]
    formulations = {v: data["train"].get("variants", {}).get(v, {}).get("formulation", v) for v in variants}
    for needed in (confirm.baseline, confirm.fdm):
        if needed not in variants or formulations[needed] != needed:
            fail(
                "report.confirm.family",
                f"{confirm.family!r} needs variants {confirm.baseline} and {confirm.fdm}, "
                f"which this profile does not train (variants: {', '.join(variants)})",
            )
    kimgs = data["snapshot_kimg"]
    listed = ", ".join(str(k) for k in kimgs)
    if confirm.images not in kimgs:
        fail(
            "report.confirm.images",
            f"{confirm.images} kimg is not a snapshot of this profile (snapshot_kimg: {listed})",
        )
    if confirm.images % 2 or confirm.half not in kimgs:
        fail(
            "report.confirm.images",
            f"FDM is read at half of {confirm.images} kimg, which is not a snapshot of this profile "
            f"(snapshot_kimg: {listed})",
        )


def load_params(path: str | Path) -> Params:
    """Read, validate and freeze a params file; any problem is one ``FdmError`` line naming the key."""
    data = read_yaml(path)
    error = schema_error(path, data)
    if error is not None:
        raise error
    _cross_check(path, data)
    evaluation = data["eval"]
    return Params(
        path=str(path),
        name=data["name"],
        seed=data["seed"],
        datasets=MappingProxyType({name: Dataset(name=name, **d) for name, d in data["datasets"].items()}),
        variants=tuple(data["variants"]),
        train_seeds=tuple(data["train_seeds"]),
        duration_kimg=data["duration_kimg"],
        snapshot_kimg=tuple(data["snapshot_kimg"]),
        train=Train(
            defaults=_freeze(data["train"]["defaults"]),
            variants=_freeze(data["train"].get("variants", {})),
            datasets=_freeze(data["train"].get("datasets", {})),
        ),
        eval=Eval(
            num_samples=evaluation["num_samples"],
            batch=evaluation["batch"],
            extractors=tuple(evaluation["extractors"]),
            modes=tuple(evaluation["modes"]),
            main=MappingProxyType({name: EvalPoint(**p) for name, p in evaluation["main"].items()}),
            nfe_study=_freeze(evaluation["nfe_study"]),
            keep_samples=evaluation["keep_samples"],
        ),
        tracking=Tracking(**data["tracking"]),
        report=Report(
            metric=data["report"]["metric"],
            compare_paper=data["report"]["compare_paper"],
            ablations=tuple(
                Ablation(a["name"], a["setting"], tuple(a["variants"]))
                for a in data["report"].get("ablations", [])
            ),
            confirm=Confirm(**data["report"]["confirm"]) if "confirm" in data["report"] else None,
        ),
        gpus=Gpus(**data["gpus"]),
        pretrained=tuple(Pretrained(**entry) for entry in data["pretrained"]),
    )
