"""From the bytes of an EDM/FDM training pickle to our network, formulation and snapshot.

The preconditioners are those of EDM (Karras et al. 2022, arXiv 2206.00364; https://github.com/NVlabs/edm,
``training/networks.py``: VPPrecond, VEPrecond, EDMPrecond) and FDM (Wu et al. 2023, arXiv 2306.06991;
https://github.com/sail-sg/FDM, the same file: FDM_VPPrecond, FDM_VEPrecond, FDM_EDMPrecond). Each wraps
a raw network, ``model``, of class SongUNet (DDPM++ / NCSN++, which this project implements) or
DhariwalUNet (ADM, which it does not). The names and layouts of the weights are those of
``fdm.checkpoints.mapping``; docs/checkpoints.md has the formulation rules and the checks.

``convert_file`` is what the backstop's child process runs (``fdm.checkpoints.backstop``): one read of the
file, its size and SHA-256 checked, the restricted unpickler (``fdm.checkpoints.unpickle``), every record
and option checked for its type and range, the network's size computed from the options and compared with
the pickle's tensors before it is built, the weights mapped, the snapshot written.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re

import torch

from fdm.checkpoints.mapping import to_ours
from fdm.checkpoints.unpickle import Container, Persistent, load_training_pickle
from fdm.diffusion import formulation
from fdm.diffusion.fdm import FDM_BETA_D, FDM_BETA_MIN
from fdm.errors import FdmError, shown
from fdm.nets import build
from fdm.snapshot import write_snapshot

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
# What the importer accepts of each integer option: far beyond any released network, and small enough that
# every size computed from them stays exact and every loop over them short.
SONGUNET_LIMITS = {
    "img_resolution": (1, 2**16),
    "in_channels": (1, 2**12),
    "out_channels": (1, 2**12),
    "label_dim": (0, 2**20),
    "augment_dim": (0, 2**12),
    "model_channels": (1, 2**16),
    "channel_mult_emb": (1, 2**8),
    "num_blocks": (1, 2**6),
    "channel_mult_noise": (1, 2**8),
    "channel_mult": (1, 2**8),  # each entry
    "attn_resolutions": (1, 2**16),  # each entry
}
_LIST_LENGTH = (1, 16)  # channel_mult (the levels) and resample_filter; attn_resolutions may be empty
_CHOICES = {
    "embedding_type": ("positional", "fourier"),
    "encoder_type": ("standard", "skip", "residual"),
    "decoder_type": ("standard", "skip"),
}
_LOSSES = ("VPLoss", "VELoss", "EDMLoss")
_MODULE_NAME = re.compile(r"[A-Za-z0-9_]{1,100}")  # a module or tensor name in a state dict
_OPTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
MAX_RECORD = 64 * 1024  # characters of JSON a snapshot keeps of one object's options


def _is_int(value) -> bool:
    return type(value) is int


def _is_number(value) -> bool:
    return type(value) in (int, float)


def init_kwargs(obj: Persistent) -> dict:
    """The keyword arguments ``obj``'s class was constructed with (persistence's ``_init_kwargs``)."""
    kwargs, args = obj.state.get("_init_kwargs"), obj.state.get("_init_args", ())
    if not isinstance(kwargs, dict) or not (isinstance(args, tuple | list) and len(args) == 0):
        raise FdmError(f"the {obj.class_name} in the pickle records no keyword-only constructor arguments")
    for key in kwargs:
        if not _OPTION_NAME.fullmatch(key):
            raise FdmError(f"the {obj.class_name} in the pickle has an option named {shown(key)}")
    return kwargs


def jsonable(value, where: str):
    """``value`` as JSON data: tuples become lists, non-finite floats strings; at most ``MAX_RECORD``
    characters in all (the unpickler has bounded its depth and refused shared parts)."""

    def convert(value, where):
        if isinstance(value, dict):
            return {key: convert(item, f"{where}.{key}") for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [convert(item, where) for item in value]
        if value is None or isinstance(value, bool | int | str):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else str(value)
        raise FdmError(f"{where} is a {type(value).__name__}, which a snapshot config cannot record")

    result = convert(value, where)
    if len(json.dumps(result)) > MAX_RECORD:
        raise FdmError(f"{where}s take more than {MAX_RECORD:,} characters; a snapshot config keeps less")
    return result


def _number(kwargs: dict, key: str, defaults: dict, owner: str) -> float:
    value = kwargs.get(key, defaults[key])
    if not _is_number(value):
        raise FdmError(f"{owner} option {key}={shown(value)} is not a number")
    return float(value)


def _songunet_options(kwargs: dict) -> dict:
    """The SongUNet options, with the authors' defaults, each checked for its type and range."""
    unknown = sorted(set(kwargs) - set(SONGUNET_DEFAULTS) - {"img_resolution", "in_channels", "out_channels"})
    if unknown:
        raise FdmError(f"SongUNet option(s) {', '.join(unknown)} are not part of the authors' SongUNet")
    options = {**SONGUNET_DEFAULTS, **kwargs}
    for key, (low, high) in SONGUNET_LIMITS.items():
        values = options.get(key)
        if key in ("channel_mult", "attn_resolutions"):
            lowest = _LIST_LENGTH[0] if key == "channel_mult" else 0
            if not (isinstance(values, list | tuple) and lowest <= len(values) <= _LIST_LENGTH[1]):
                raise FdmError(f"SongUNet option {key}={shown(values)} is not a list of 1 to 16 integers")
        else:
            values = [values]
        for value in values:
            if not (_is_int(value) and low <= value <= high):
                raise FdmError(
                    f"SongUNet option {key}={shown(options.get(key))} is not an integer in [{low}, {high}]"
                )
    for key, choices in _CHOICES.items():
        if options[key] not in choices:
            raise FdmError(f"SongUNet option {key}={shown(options[key])} is not one of {', '.join(choices)}")
    for key in ("dropout", "label_dropout"):
        if not (_is_number(options[key]) and 0 <= options[key] <= 1):
            raise FdmError(f"SongUNet option {key}={shown(options[key])} is not a probability")
    taps = options["resample_filter"]
    if not (
        isinstance(taps, list | tuple)
        and _LIST_LENGTH[0] <= len(taps) <= _LIST_LENGTH[1]
        and all(_is_number(tap) and math.isfinite(tap) for tap in taps)
        and sum(taps) > 0
    ):
        raise FdmError(f"SongUNet option resample_filter={shown(taps)} is not a list of 1 to 16 filter taps")
    if options.get("in_channels") != options.get("out_channels"):
        raise FdmError(
            f"SongUNet with {options.get('in_channels')} input and {options.get('out_channels')} output channels"
        )
    return options


def network_config(model: Persistent) -> dict:
    """Keyword arguments of ``fdm.nets.build`` for the authors' raw network ``model``."""
    if model.class_name == "DhariwalUNet":
        raise FdmError(
            "the network is a DhariwalUNet (ADM), which this project does not implement "
            "(only the SongUNet family: DDPM++ and NCSN++)"
        )
    if model.class_name != "SongUNet":
        raise FdmError(f"unknown network class {model.class_name!r} (expected SongUNet)")
    kwargs = _songunet_options(init_kwargs(model))
    options = {k: v for k, v in kwargs.items() if k in SONGUNET_DEFAULTS}
    arch = "ncsnpp" if options["embedding_type"] == "fourier" else "ddpmpp"
    return jsonable(
        {
            "arch": arch,
            "img_resolution": kwargs["img_resolution"],
            "img_channels": kwargs["in_channels"],
            **options,
        },
        "SongUNet option",
    )


def weight_count(network: dict) -> int:
    """The number of weights in the state dict of ``fdm.nets.build(**network)``, from the options alone.

    A closed form of ``fdm.nets.songunet.SongUNet``'s constructor (parameters, and the Fourier embedding's
    frequencies; the FIR kernels are not in the state dict), exact in Python integers however large the
    options: tests/test_import_checkpoint.py checks it against built networks of every kind.
    """
    mc, mults, blocks = network["model_channels"], network["channel_mult"], network["num_blocks"]
    img, attention = network["img_channels"], set(network["attn_resolutions"])
    noise, emb = mc * network["channel_mult_noise"], mc * network["channel_mult_emb"]

    def linear(fan_in, fan_out, bias=True):
        return fan_in * fan_out + (fan_out if bias else 0)

    def conv(fan_in, fan_out, kernel):
        return fan_in * fan_out * kernel * kernel + fan_out

    def block(cin, cout, attend=False, resample=False):
        count = 2 * cin + conv(cin, cout, 3) + linear(emb, cout) + 2 * cout + conv(cout, cout, 3)
        count += conv(cin, cout, 1) if cin != cout or resample else 0
        return count + (2 * cout + linear(cout, 3 * cout) + linear(cout, cout) if attend else 0)

    total = noise // 2 if network["embedding_type"] == "fourier" else 0
    total += linear(network["label_dim"], noise) if network["label_dim"] else 0
    total += linear(network["augment_dim"], noise, bias=False) if network["augment_dim"] else 0
    total += linear(noise, emb) + linear(emb, emb) + conv(img, mc, 3)
    skips, channels, aux = [mc], mc, img
    for level, mult in enumerate(mults):
        res = network["img_resolution"] >> level
        if level:
            total += block(channels, channels, resample=True)
            if network["encoder_type"] == "skip":
                total += conv(img, channels, 1)
            elif network["encoder_type"] == "residual":
                total, aux = total + conv(aux, channels, 3), channels
            skips.append(channels)
        for _ in range(blocks):
            total += block(channels, mc * mult, attend=res in attention)
            channels = mc * mult
            skips.append(channels)
    total += block(channels, channels, attend=True) + block(channels, channels)
    for level in reversed(range(len(mults))):
        res = network["img_resolution"] >> level
        if level < len(mults) - 1:
            total += block(channels, channels, resample=True)
        for index in range(blocks + 1):
            cin, channels = channels + skips.pop(), mc * mults[level]
            total += block(cin, channels, attend=index == blocks and res in attention)
        if network["decoder_type"] == "skip" or level == 0:
            total += 2 * channels + conv(channels, img, 3)
    return total


def formulation_config(precond: Persistent, loss: Persistent | None) -> tuple[dict, list[str]]:
    """(``Formulation.config()`` reproducing ``precond``'s D(x; sigma), notes on what was decided)."""
    owner, kwargs, notes = precond.class_name, init_kwargs(precond), []
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
        if not (options["M"].is_integer() and 1 <= options["M"] <= 2**31):
            raise FdmError(f"{owner} option M={shown(kwargs['M'])} is not a positive integer")
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
            loss_kwargs = init_kwargs(loss)
            for key, default in (("P_mean", -1.2), ("P_std", 1.2)):
                options[key] = _number(loss_kwargs, key, {key: default}, "EDMLoss")
    if name != base:
        for key in ("fdm_beta_d", "fdm_beta_min"):
            if numbers[key] != _FDM_DEFAULTS[key]:
                raise FdmError(
                    f"{owner} option {key}={shown(kwargs[key])} cannot be represented: "
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
    except ValueError as err:  # how a formulation reports settings outside its domain
        raise FdmError(f"{owner} options cannot be represented: {err}") from None
    if not 0 < f.sigma_min < f.sigma_max < math.inf:
        raise FdmError(f"{owner} options give the sigma range [{f.sigma_min}, {f.sigma_max}]")
    return f.config(), notes


def _warmup(loss: Persistent | None, notes: list[str]) -> int:
    """FDM's loss-weight warmup in steps: the loss's ``warmup_ite``; without one the authors apply no cap."""
    value = init_kwargs(loss).get("warmup_ite") if loss is not None and loss.class_name in _LOSSES else None
    if value is None:
        notes.append(
            "no warmup_ite in the pickle's loss: warmup 0 (the authors' loss then caps no loss weight)"
        )
        return 0
    if not (_is_number(value) and 0 <= value <= 2**53):
        raise FdmError(f"the loss option warmup_ite={shown(value)} is not a number of iterations")
    return round(value)


def _state(obj, where: str) -> dict:
    state = obj.state
    if not isinstance(state, dict):  # a module container that BUILD never gave a state
        raise FdmError(f"module {where or 'model'} is a {type(obj).__name__} without a state")
    return state


def _group(state: dict, key: str, where: str) -> dict:
    value = state.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FdmError(
            f"the {key} of module {where or 'model'} is a {type(value).__name__}, not a dictionary"
        )
    return value


def module_tensors(obj: Persistent | Container, prefix: str = ""):
    """Yield (name, tensor) for the parameters and persistent buffers of a pickled module tree."""
    state = _state(obj, prefix.rstrip("."))
    skipped = state.get("_non_persistent_buffers_set", set())
    if not (isinstance(skipped, set) and all(type(name) is str for name in skipped)):
        raise FdmError(
            f"the _non_persistent_buffers_set of module {prefix.rstrip('.') or 'model'} is not a set of names"
        )
    for group in ("_parameters", "_buffers"):
        for name, tensor in _group(state, group, prefix.rstrip(".")).items():
            if not _MODULE_NAME.fullmatch(name):
                raise FdmError(f"a tensor named {shown(prefix + name)}, which no state dict has")
            if tensor is None or name in skipped:
                continue
            if not isinstance(tensor, torch.Tensor):
                raise FdmError(f"{prefix}{name} is a {type(tensor).__name__}, not a tensor")
            yield prefix + name, tensor
    for name, child in _group(state, "_modules", prefix.rstrip(".")).items():
        if not _MODULE_NAME.fullmatch(name):
            raise FdmError(f"a module named {shown(prefix + name)}, which no state dict has")
        if child is None:
            continue
        if not isinstance(child, Persistent | Container):
            raise FdmError(f"module {prefix}{name} is a {type(child).__name__}, not a pickled module")
        yield from module_tensors(child, f"{prefix}{name}.")


def _check_size(network: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Refuse options describing a network the pickle's own tensors could not fill, before building it."""
    weights = weight_count(network)
    held = sum(
        t.numel() * t.element_size() for name, t in tensors.items() if not name.endswith("resample_filter")
    )
    if 2 * weights > held:  # even in float16, 2 bytes a weight
        raise FdmError(
            f"the SongUNet options describe a network of {weights:,} weights, more than the {held:,} bytes of "
            "tensors the pickle holds for it could fill (nothing was built)"
        )


# Options of the preconditioner that name the image format, checked against the network's own.
_SHARED = (("img_resolution", "img_resolution"), ("img_channels", "in_channels"), ("label_dim", "label_dim"))


def convert_tree(tree, source: str, digest: str) -> tuple[dict[str, torch.Tensor], dict]:
    """(Our state dict, the snapshot config) of the object tree of a training pickle."""
    ema = tree.get("ema") if isinstance(tree, dict) else None
    if not isinstance(ema, Persistent):
        raise FdmError("it holds no 'ema' network (not the dict an EDM/FDM training run pickles)")
    if ema.class_name not in PRECONDS:
        raise FdmError(
            f"unknown preconditioner class {ema.class_name!r} for 'ema'; expected one of {', '.join(PRECONDS)}"
        )
    model = _group(ema.state, "_modules", "ema").get("model")
    if not isinstance(model, Persistent):
        raise FdmError(f"its {ema.class_name} holds no pickled network 'model'")
    loss = tree.get("loss_fn") if isinstance(tree.get("loss_fn"), Persistent) else None
    network = network_config(model)
    form, notes = formulation_config(ema, loss)
    model_kwargs, ema_kwargs = init_kwargs(model), init_kwargs(ema)
    for ours, theirs in _SHARED:
        value = model_kwargs.get(theirs, 0)  # an integer: _songunet_options checked it
        stated = ema_kwargs.get(ours, value)
        if not _is_int(stated) or stated != value:
            raise FdmError(f"{ema.class_name} has {ours}={shown(stated)} but its network {value!r}")
    use_fp16 = ema_kwargs.get("use_fp16", False)
    if type(use_fp16) is not bool:
        raise FdmError(f"{ema.class_name} option use_fp16={shown(use_fp16)} is not a boolean")
    if use_fp16:
        notes.append("use_fp16: the authors ran the network in float16 on GPUs; it runs in float32 here")
    tensors = dict(module_tensors(model))
    _check_size(network, tensors)
    try:
        net = build(**network)
    except ValueError as err:  # how fdm.nets reports options it cannot build (GroupNorm widths, levels)
        raise FdmError(f"the pickle's SongUNet options do not build here: {err}") from None
    state = to_ours(tensors, net, prefix="model.")
    loss_record = loss and {
        "class_name": loss.class_name,
        "init_kwargs": jsonable(init_kwargs(loss), f"{loss.class_name} option"),
    }
    imported = {
        "source": source,
        "sha256": digest,
        "class_name": ema.class_name,
        "init_kwargs": jsonable(ema_kwargs, f"{ema.class_name} option"),
        "network_class_name": model.class_name,
        "network_init_kwargs": jsonable(model_kwargs, "SongUNet option"),
        "loss": loss_record,
        "notes": notes,
    }
    return state, {"network": network, "formulation": form, "imported": imported}


class ChecksumMismatch(FdmError):
    """The file's SHA-256 is not the one asked for."""


def read_once(path: str, sha256: str | None, max_bytes: int) -> tuple[bytes, str]:
    """(The bytes of ``path``, their SHA-256): one read, at most ``max_bytes``, the digest checked on the very
    bytes that will be unpickled (a file swapped after the check cannot be the one converted)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            data = f.read(size + 1) if size <= max_bytes else b""  # (read(n) allocates n bytes first)
    except OSError as err:
        raise FdmError(f"cannot read {path}: {err.strerror or err}") from None
    if size > max_bytes or len(data) > max_bytes:
        raise FdmError(
            f"{path} has {max(size, len(data)):,} bytes, more than the importer's limit of {max_bytes:,} "
            "(--max-size raises it)"
        )
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256:
        raise ChecksumMismatch(f"checksum mismatch: {path} has SHA-256 {digest}, expected {sha256}")
    return data, digest


def convert_file(path: str, source: str, sha256: str | None, max_bytes: int, dest: str) -> dict:
    """Read the training pickle ``path`` once, convert it, write the snapshot to ``dest``; return its config.

    ``source`` is what the config records as where it came from; ``sha256``, if given, must be the file's.
    Every refusal is a one-line ``FdmError`` naming the file (``fdm.checkpoints.backstop`` runs this in a
    child process with limits on memory and time).
    """
    data, digest = read_once(path, sha256, max_bytes)
    tree = load_training_pickle(data, path)
    del data  # the tree holds its own storages
    try:
        state, config = convert_tree(tree, source, digest)
    except FdmError as err:
        raise FdmError(f"{path}: {err}") from None
    write_snapshot(dest, state, config)
    with open(dest, "rb+") as f:  # on disk before the parent renames it into place
        os.fsync(f.fileno())
    return config


__all__ = ["PRECONDS", "ChecksumMismatch", "convert_file", "convert_tree", "weight_count"]
