"""Diffusion formulations (the bases of ``fdm.names.BASES`` and their FDM variants) and the denoiser wrapper.

``formulation(name, **options)`` is the one constructor; ``Denoiser(net, formulation)`` turns a raw
network F into D(x; sigma). Every module of this package is imported here, so a base formulation in a
file of its own registers itself (``fdm.diffusion.formulations``); the import fails, in one line, where
the registry and ``fdm.names.BASES`` disagree.
"""

from __future__ import annotations

import importlib
import pkgutil

from fdm import names
from fdm.diffusion.denoiser import Denoiser
from fdm.diffusion.fdm import FDM
from fdm.diffusion.formulations import EDM, REGISTRY, VE, VP, Formulation

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def check_registry(registry, bases) -> None:
    """Refuse a registry of base formulations that is not ``bases`` (ImportError, one line), or a base
    whose options collide with FDM's (an FDM variant takes both in one ``formulation_options``)."""
    missing = [name for name in bases if name not in registry]
    extra = [name for name in registry if name not in bases]
    if missing or extra:
        raise ImportError(
            "fdm.diffusion: the registered base formulations differ from fdm.names.BASES"
            + (f"; no class for {', '.join(missing)}" if missing else "")
            + (f"; not in BASES: {', '.join(extra)}" if extra else "")
        )
    for name, cls in registry.items():
        shared = sorted(set(cls.options()) & set(FDM.options()))
        if shared:
            raise ImportError(f"fdm.diffusion: {name}'s option(s) {', '.join(shared)} are also FDM's")


check_registry(REGISTRY, names.BASES)


def options(name: str) -> dict:
    """The options of formulation ``name`` and their defaults: its base's, and FDM's for an FDM variant."""
    names.check_formulation(name)
    found = REGISTRY[names.base_of(name)].options()
    return found if name in names.BASES else {**found, **FDM.options()}


def formulation(name: str, **overrides) -> Formulation:
    """Build a formulation by name (``fdm.names.FORMULATIONS``), e.g. ``edm`` or ``fdm_edm``.

    ``overrides`` set hyperparameters, e.g. ``formulation("fdm_edm", multiplier=1.0, warmup=800)`` or
    ``formulation("edm", P_mean=-1.0)``. An unknown name or option is a ValueError naming the valid ones.
    """
    valid = options(name)
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for formulation {name!r}; valid: {', '.join(sorted(valid))}"
        )
    base_cls = REGISTRY[names.base_of(name)]
    base = base_cls(**{k: v for k, v in overrides.items() if k in base_cls.options()})
    if name in names.BASES:
        return base
    return FDM(base, **{k: v for k, v in overrides.items() if k in FDM.options()})


def parse_options(name: str, pairs) -> dict:
    """``KEY=VALUE`` texts (``fdm train --formulation-option``) as options of ``name``, each value read as
    the type of its option's default: ``["multiplier=1.5", "cin=scale"]`` -> ``{"multiplier": 1.5, "cin": "scale"}``."""
    valid = options(name)
    result = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise ValueError(f"formulation option {pair!r} is not KEY=VALUE")
        if key not in valid:
            raise ValueError(
                f"unknown option {key} for formulation {name!r}; valid: {', '.join(sorted(valid))}"
            )
        kind = type(valid[key])
        try:
            if kind is bool and text.lower() not in ("true", "false"):
                raise ValueError
            result[key] = text.lower() == "true" if kind is bool else kind(text)
        except ValueError:
            raise ValueError(f"formulation option {key}: {text!r} is not a {kind.__name__}") from None
    return result


__all__ = [
    "EDM",
    "FDM",
    "REGISTRY",
    "VE",
    "VP",
    "Denoiser",
    "Formulation",
    "check_registry",
    "formulation",
    "options",
    "parse_options",
]
