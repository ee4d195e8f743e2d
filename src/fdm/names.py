"""The names the whole project spells one way: formulations, samplers and their NFE rule, feature spaces.

The params schema, the Snakefile's wildcard patterns, the command-line choices, the report and
tracking all take these from here (tests/test_paths.py checks the schema against them). The
formulations are written once, in ``BASES``: their FDM variants, baselines, the schema's enums, the
wildcard pattern and the report's colours follow from it. Torch-free, so light commands and the
Snakefile import it cheaply.
"""

from __future__ import annotations

BASES = ("vp", "ve", "edm", "rf")
"""The base formulations, the one list of their names: each is a class in ``fdm.diffusion`` registered
under its name, and ``fdm.diffusion`` refuses to import if the two lists disagree. The paper's three
(arXiv 2306.06991, section 4) are vp, ve and edm; any other is beyond the paper."""

FDM = "fdm"
"""FDM's name: its variant of a base ``b`` is ``fdm_b``, and its options are a profile's
``formulation_options.fdm`` (docs/profiles.md)."""

FORMULATIONS = BASES + tuple(f"{FDM}_{base}" for base in BASES)
"""Every formulation a profile may train: each base and its FDM variant."""

BASELINE = {f"{FDM}_{base}": base for base in BASES}
"""Each FDM variant and the base formulation whose c_in it replaces (arXiv 2306.06991, section 3)."""

OPTION_GROUPS = (*BASES, FDM)
"""The keys of a profile's ``formulation_options``: a base's options, or FDM's."""

SAMPLERS = ("heun", "euler", "dpmpp_3s", "dpmpp_2m")
_MIN_STEPS = {"heun": 1, "euler": 1, "dpmpp_3s": 2, "dpmpp_2m": 1}

EXTRACTORS = ("inception", "digitsnet")
INCEPTION_MODES = ("clean", "legacy_tensorflow")
DIGITSNET_MODE = "native"  # The digits network sees the images at their own resolution.


def base_of(formulation: str) -> str:
    """The base formulation of ``formulation``: ``edm`` for ``fdm_edm`` and for ``edm``."""
    check_formulation(formulation)
    return BASELINE.get(formulation, formulation)


def option_groups(formulation: str) -> tuple[str, ...]:
    """The ``formulation_options`` groups that apply to ``formulation``: its base's, then FDM's if it is a
    variant of FDM (``fdm_edm``: edm, fdm)."""
    base = base_of(formulation)
    return (base,) if formulation == base else (base, FDM)


def check_formulation(formulation: str) -> None:
    """Refuse a name outside ``FORMULATIONS`` (ValueError naming the valid ones)."""
    if formulation not in FORMULATIONS:
        raise ValueError(f"unknown formulation {formulation!r}; expected one of {', '.join(FORMULATIONS)}")


def check_sampler(sampler: str) -> None:
    """Refuse a sampler name outside ``SAMPLERS`` (ValueError naming the valid ones)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")


def nfe(sampler: str, num_steps: int) -> int:
    """Denoiser evaluations of ``num_steps`` steps: heun 2N - 1 (no correction onto sigma = 0, EDM
    Algorithm 1), euler / dpmpp_3s / dpmpp_2m N (DPM-Solver++'s last evaluation is the final denoise)."""
    check_sampler(sampler)
    if num_steps < _MIN_STEPS[sampler]:
        raise ValueError(f"{sampler} needs at least {_MIN_STEPS[sampler]} steps, got {num_steps}")
    return 2 * num_steps - 1 if sampler == "heun" else num_steps


def steps_for_nfe(sampler: str, nfe_value: int) -> int:
    """The ``num_steps`` that gives exactly ``nfe_value`` evaluations (inverse of ``nfe``)."""
    check_sampler(sampler)
    num_steps = (nfe_value + 1) // 2 if sampler == "heun" else nfe_value
    if num_steps < _MIN_STEPS[sampler] or nfe(sampler, num_steps) != nfe_value:
        rule = "2N - 1, i.e. odd" if sampler == "heun" else "N"
        raise ValueError(
            f"no step count N >= {_MIN_STEPS[sampler]} gives NFE {nfe_value} for {sampler} (its NFE is {rule})"
        )
    return num_steps


def modes(extractor: str, inception_modes) -> tuple[str, ...]:
    """The modes ``extractor`` scores in: the profile's ``inception_modes`` for Inception, else its one mode."""
    return tuple(inception_modes) if extractor == "inception" else (DIGITSNET_MODE,)


def measure_name(extractor: str, mode: str) -> str:
    """A feature space's name: the extractor, plus the mode unless the extractor has only one
    (``digitsnet``, ``inception_clean``); metric names carry it."""
    return extractor if mode == DIGITSNET_MODE else f"{extractor}_{mode}"


def metric_name(kind: str, extractor: str, mode: str) -> str:
    """``fid``/``kid`` + the feature space: ``fid_inception_legacy_tensorflow``, ``kid_digitsnet``."""
    return f"{kind}_{measure_name(extractor, mode)}"


def metric_names(extractors, inception_modes) -> tuple[str, ...]:
    """Every metric an evaluation writes: fid and kid in each feature space of ``extractors``."""
    return tuple(
        metric_name(kind, extractor, mode)
        for extractor in extractors
        for mode in modes(extractor, inception_modes)
        for kind in ("fid", "kid")
    )
