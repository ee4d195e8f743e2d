"""Diffusion formulations (VP, VE, EDM and their FDM variants) and the denoiser wrapper.

``formulation(name, **overrides)`` is the one constructor; ``Denoiser(net, formulation)`` turns a raw
network F into D(x; sigma).
"""

from __future__ import annotations

import dataclasses

from fdm.diffusion.denoiser import Denoiser
from fdm.diffusion.fdm import FDM
from fdm.diffusion.formulations import BASES, EDM, VE, VP, Formulation
from fdm.names import FORMULATIONS

_FDM_FIELDS = ("multiplier", "warmup", "cin")


def formulation(name: str, **overrides) -> Formulation:
    """Build a formulation by name: vp, ve, edm, fdm_vp, fdm_ve or fdm_edm.

    ``overrides`` set hyperparameters, e.g. ``formulation("fdm_edm", multiplier=1.0, warmup=800)`` or
    ``formulation("edm", sigma_data=0.5)``. An unknown name or key is a ValueError naming the valid ones.
    """
    if name not in FORMULATIONS:
        raise ValueError(f"unknown formulation {name!r}; expected one of {', '.join(FORMULATIONS)}")
    is_fdm = name.startswith("fdm_")
    base_cls = BASES[name.removeprefix("fdm_")]
    base_fields = {f.name for f in dataclasses.fields(base_cls)}
    valid = base_fields | (set(_FDM_FIELDS) if is_fdm else set())
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for formulation {name!r}; valid: {', '.join(sorted(valid))}"
        )
    base = base_cls(**{k: v for k, v in overrides.items() if k in base_fields})
    if not is_fdm:
        return base
    return FDM(base, **{k: v for k, v in overrides.items() if k in _FDM_FIELDS})


__all__ = ["EDM", "FDM", "FORMULATIONS", "VE", "VP", "Denoiser", "Formulation", "formulation"]
