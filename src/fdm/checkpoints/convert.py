"""From the object tree of an EDM/FDM training pickle to our network, formulation and state dict.

The preconditioners are those of EDM (Karras et al. 2022, arXiv 2206.00364; https://github.com/NVlabs/edm,
``training/networks.py``: VPPrecond, VEPrecond, EDMPrecond) and FDM (Wu et al. 2023, arXiv 2306.06991;
https://github.com/sail-sg/FDM, the same file: FDM_VPPrecond, FDM_VEPrecond, FDM_EDMPrecond). Each wraps
a raw network, ``model``, of class SongUNet (DDPM++ / NCSN++, which this project implements) or
DhariwalUNet (ADM, which it does not). The names and layouts of the weights are those of
``fdm.checkpoints.mapping``; docs/networks.md, "Importing the authors' checkpoints", has the formulation
rules.
"""

from __future__ import annotations

import math

import torch

from fdm.checkpoints.mapping import to_ours
from fdm.checkpoints.unpickle import Container, Persistent
from fdm.diffusion import formulation
from fdm.diffusion.fdm import FDM_BETA_D, FDM_BETA_MIN
from fdm.errors import FdmError

# Preconditioner class -> our formulation.
PRECONDS = {
    "VPPrecond": "vp",
    "VEPrecond": "ve",
    "EDMPrecond": "edm",
    "FDM_VPPrecond": "fdm_vp",
    "FDM_VEPrecond": "fdm_ve",
    "FDM_EDMPrecond": "fdm_edm",
}
_COMMON_OPTIONS = {"img_resolution", "img_channels", "label_dim", "use_fp16", "model_type"}
# Each preconditioner's own options and their defaults in the authors' code.
_BASE_DEFAULTS = {
    "vp": {"beta_d": 19.9, "beta_min": 0.1, "M": 1000, "epsilon_t": 1e-5},
    "ve": {"sigma_min": 0.02, "sigma_max": 100.0},
    "edm": {"sigma_data": 0.5, "sigma_min": 0.0, "sigma_max": math.inf},
}
_FDM_DEFAULTS = {"fdm_beta_d": FDM_BETA_D, "fdm_beta_min": FDM_BETA_MIN, "fdm_multiplier": 1.0}
# The range EDM's own EDMPrecond leaves at (0, inf); FDM_EDMPrecond declares it (fdm.diffusion.formulations).
_EDM_RANGE = (0.002, 80.0)
# The authors' SongUNet constructor options and defaults (besides img_resolution and the channel counts).
SONGUNET_DEFAULTS = {
    "label_dim": 0,
    "augment_dim": 0,
    "model_channels": 128,
    "channel_mult": [1, 2, 2, 2],
    "channel_mult_emb": 4,
    "num_blocks": 4,
    "attn_resolutions": [16],
    "dropout": 0.10,
    "label_dropout": 0,
    "embedding_type": "positional",
    "channel_mult_noise": 1,
    "encoder_type": "standard",
    "decoder_type": "standard",
    "resample_filter": [1, 1],
}
_LOSSES = ("VPLoss", "VELoss", "EDMLoss")


def jsonable(value, where: str):
    """``value`` as JSON data: tuples become lists, numpy numbers Python ones, non-finite floats strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, where) for v in value]
    if hasattr(value, "dtype") and hasattr(value, "item") and getattr(value, "shape", None) == ():
        value = value.item()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    raise FdmError(f"{where} is a {type(value).__name__}, which a snapshot config cannot record")


def _number(kwargs: dict, key: str, defaults: dict, owner: str) -> float:
    value = kwargs.get(key, defaults[key])
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FdmError(f"{owner} option {key}={value!r} is not a number")
    return float(value)


def network_config(model: Persistent) -> dict:
    """Keyword arguments of ``fdm.nets.build`` for the authors' raw network ``model``."""
    if model.class_name == "DhariwalUNet":
        raise FdmError(
            "the network is a DhariwalUNet (ADM), which this project does not implement "
            "(only the SongUNet family: DDPM++ and NCSN++)"
        )
    if model.class_name != "SongUNet":
        raise FdmError(f"unknown network class {model.class_name!r} (expected SongUNet)")
    kwargs = dict(model.init_kwargs)
    unknown = sorted(set(kwargs) - set(SONGUNET_DEFAULTS) - {"img_resolution", "in_channels", "out_channels"})
    if unknown:
        raise FdmError(f"SongUNet option(s) {', '.join(unknown)} are not part of the authors' SongUNet")
    if kwargs.get("in_channels") != kwargs.get("out_channels"):
        raise FdmError(
            f"SongUNet with {kwargs.get('in_channels')} input and {kwargs.get('out_channels')} output channels"
        )
    options = {**SONGUNET_DEFAULTS, **{k: v for k, v in kwargs.items() if k in SONGUNET_DEFAULTS}}
    arch = "ncsnpp" if options["embedding_type"] == "fourier" else "ddpmpp"
    return jsonable(
        {
            "arch": arch,
            "img_resolution": kwargs.get("img_resolution"),
            "img_channels": kwargs.get("in_channels"),
            **options,
        },
        "SongUNet options",
    )


def formulation_config(precond: Persistent, loss: Persistent | None) -> tuple[dict, list[str]]:
    """(``Formulation.config()`` reproducing ``precond``'s D(x; sigma), notes on what was decided)."""
    owner, kwargs, notes = precond.class_name, precond.init_kwargs, []
    name = PRECONDS[owner]
    base = name.removeprefix("fdm_")
    defaults = dict(_BASE_DEFAULTS[base], **(_FDM_DEFAULTS if name != base else {}))
    if name == "fdm_edm":  # FDM_EDMPrecond declares EDM's range itself: its time t runs over it.
        defaults.update(sigma_min=_EDM_RANGE[0], sigma_max=_EDM_RANGE[1])
    unknown = sorted(set(kwargs) - _COMMON_OPTIONS - set(defaults) - set(SONGUNET_DEFAULTS))
    if unknown:
        raise FdmError(f"{owner} option(s) {', '.join(unknown)} are unknown to the authors' {owner}")
    numbers = {k: _number(kwargs, k, defaults, owner) for k in defaults}
    if base == "vp":
        options = {k: numbers[k] for k in ("beta_d", "beta_min", "M", "epsilon_t")}
        if not (options["M"].is_integer() and options["M"] >= 1):
            raise FdmError(f"{owner} option M={kwargs['M']!r} is not a positive integer")
        options["M"] = int(options["M"])
    elif base == "ve":
        options = {"ve_sigma_min": numbers["sigma_min"], "ve_sigma_max": numbers["sigma_max"]}
    else:
        low, high = numbers["sigma_min"], numbers["sigma_max"]
        if name == "edm" and (low == 0 or high == math.inf):
            low = _EDM_RANGE[0] if low == 0 else low
            high = _EDM_RANGE[1] if high == math.inf else high
            notes.append(
                f"EDMPrecond leaves its sigma range open; stated as [{low}, {high}], where EDM samples"
            )
        options = {"sigma_data": numbers["sigma_data"], "edm_sigma_min": low, "edm_sigma_max": high}
        if loss is not None and loss.class_name == "EDMLoss":
            loss_kwargs = loss.init_kwargs
            for key, default in (("P_mean", -1.2), ("P_std", 1.2)):
                options[key] = _number(loss_kwargs, key, {key: default}, "EDMLoss")
    if name != base:
        for key in ("fdm_beta_d", "fdm_beta_min"):
            if numbers[key] != _FDM_DEFAULTS[key]:
                raise FdmError(
                    f"{owner} option {key}={kwargs[key]!r} cannot be represented: "
                    f"this project's FDM schedule fixes {key}={_FDM_DEFAULTS[key]}"
                )
        multiplier = numbers["fdm_multiplier"]
        if name == "fdm_ve":
            notes.append(
                f"FDM_VEPrecond ignores fdm_multiplier ({multiplier:g}): imported with multiplier 1, "
                "as the authors' code runs it"
            )
            multiplier = 1.0
        options.update(multiplier=multiplier, warmup=_warmup(loss, notes))
    try:
        f = formulation(name, **options)
    except (TypeError, ValueError) as err:
        raise FdmError(f"{owner} options cannot be represented: {err}") from None
    if not 0 < f.sigma_min < f.sigma_max < math.inf:
        raise FdmError(f"{owner} options give the sigma range [{f.sigma_min}, {f.sigma_max}]")
    return f.config(), notes


def _warmup(loss: Persistent | None, notes: list[str]) -> int:
    """FDM's loss-weight warmup in steps: the loss's ``warmup_ite``; without one the authors apply no cap."""
    value = loss.init_kwargs.get("warmup_ite") if loss is not None and loss.class_name in _LOSSES else None
    if value is None:
        notes.append(
            "no warmup_ite in the pickle's loss: warmup 0 (the authors' loss then caps no loss weight)"
        )
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise FdmError(f"the loss option warmup_ite={value!r} is not a number of iterations")
    return round(value)


def module_tensors(obj: Persistent | Container, prefix: str = ""):
    """Yield (name, tensor) for the parameters and persistent buffers of a pickled module tree."""
    state = obj.state
    skipped = state.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for name, tensor in (state.get(group) or {}).items():
            if tensor is None or name in skipped:
                continue
            if not isinstance(tensor, torch.Tensor):
                raise FdmError(f"{prefix}{name} is a {type(tensor).__name__}, not a tensor")
            yield prefix + name, tensor
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, Persistent | Container):
            raise FdmError(f"module {prefix}{name} is a {type(child).__name__}, not a pickled module")
        yield from module_tensors(child, f"{prefix}{name}.")


def load_weights(net: torch.nn.Module, model: Persistent) -> None:
    """Copy ``model``'s tensors into ``net`` (``fdm.checkpoints.mapping``, strict); one-line errors."""
    net.load_state_dict(to_ours(dict(module_tensors(model)), net, prefix="model."), strict=True)
