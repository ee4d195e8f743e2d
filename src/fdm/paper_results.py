"""The paper's FID numbers, as data, to stand beside ours in the report.

Source: the FDM README's result tables, which are the paper's main tables (docs/paper.md
section 7). Inception FID over 50,000 samples, computed with EDM's ``fid.py``, so the
comparable metric of ours is ``fid_inception_legacy_tensorflow``. Datasets are keyed by their
``fdm prepare`` source (cifar10, ffhq, afhqv2), snapshots by kimg (50 Mimg = 50000 kimg) and
samplers by our names (the paper's "EDM sampler" is ``heun``, its DPM-Solver++ ``dpmpp_3s``).
"""

from __future__ import annotations

METRIC = "fid_inception_legacy_tensorflow"
VARIANTS = ("edm", "fdm_edm", "vp", "fdm_vp", "ve", "fdm_ve")  # the tables' column order

# docs/paper.md section 7.1: FID vs training Mimg with the Heun sampler (NFE 79 on 64x64; 35 presumed on CIFAR-10).
MAIN_SAMPLER = "heun"
MAIN_NFE = {"cifar10": 35, "ffhq": 79, "afhqv2": 79}
_FID_VS_MIMG = [
    # dataset, Mimg, EDM, EDM-FDM, VP, VP-FDM, VE, VE-FDM
    ("cifar10", 50, (5.76, 2.17, 2.74, 2.74, 49.47, 10.01)),
    ("cifar10", 100, (1.99, 1.93, 2.24, 2.24, 4.05, 3.26)),
    ("cifar10", 150, (1.92, 1.83, 2.19, 2.13, 3.27, 3.00)),
    ("cifar10", 200, (1.88, 1.79, 2.15, 2.08, 3.09, 2.85)),
    ("ffhq", 50, (3.21, 3.27, 3.07, 12.49, 96.49, 93.72)),
    ("ffhq", 100, (2.87, 2.69, 2.83, 2.80, 94.14, 88.42)),
    ("ffhq", 150, (2.69, 2.63, 2.73, 2.53, 79.20, 4.73)),
    ("ffhq", 200, (2.65, 2.59, 2.69, 2.43, 38.97, 3.04)),
    ("afhqv2", 50, (2.62, 2.73, 3.46, 25.70, 57.93, 54.41)),
    ("afhqv2", 100, (2.57, 2.05, 2.81, 2.65, 57.87, 52.45)),
    ("afhqv2", 150, (2.44, 1.96, 2.72, 2.47, 57.69, 50.53)),
    ("afhqv2", 200, (2.37, 1.93, 2.61, 2.39, 57.48, 47.30)),
]

# docs/paper.md section 7: the headline claims, as speedup ratios. "About 50% training cost": FDM at 100 Mimg is
# comparable to the baseline at 200 Mimg (2x); "about 3x fewer steps": FDM at NFE 25 is at or below the
# baseline at NFE 79 on AFHQv2 (79/25 = 3.2, stated as 3x).
CLAIMED_TRAINING_SPEEDUP = 2.0
CLAIMED_SAMPLING_SPEEDUP = 3.0

# docs/paper.md section 7.2: FID vs NFE of the 200-Mimg AFHQv2 models.
_FID_VS_NFE = [
    # dataset, sampler, NFE, EDM, EDM-FDM, VP, VP-FDM, VE, VE-FDM
    ("afhqv2", "heun", 25, (2.78, 2.32, 2.88, 2.59, 61.04, 48.29)),
    ("afhqv2", "heun", 49, (2.39, 1.93, 2.64, 2.41, 57.59, 47.49)),
    ("afhqv2", "heun", 79, (2.37, 1.93, 2.61, 2.39, 57.48, 47.30)),
    ("afhqv2", "dpmpp_3s", 25, (2.60, 2.09, 2.99, 2.64, 59.26, 49.51)),
    ("afhqv2", "dpmpp_3s", 49, (2.42, 1.98, 2.79, 2.45, 59.16, 48.68)),
    ("afhqv2", "dpmpp_3s", 79, (2.39, 1.95, 2.78, 2.42, 58.91, 48.66)),
]


def fid_vs_kimg(source: str) -> dict[str, dict[int, float]]:
    """variant -> {kimg: FID} of section 7.1 for a dataset source; empty if the paper has none."""
    table: dict[str, dict[int, float]] = {}
    for dataset, mimg, fids in _FID_VS_MIMG:
        if dataset == source:
            for variant, fid in zip(VARIANTS, fids, strict=True):
                table.setdefault(variant, {})[mimg * 1000] = fid
    return table


def fid_vs_nfe(source: str) -> dict[str, dict[str, dict[int, float]]]:
    """sampler -> variant -> {NFE: FID} of section 7.2 (final models); empty if the paper has none."""
    table: dict[str, dict[str, dict[int, float]]] = {}
    for dataset, sampler, nfe, fids in _FID_VS_NFE:
        if dataset == source:
            for variant, fid in zip(VARIANTS, fids, strict=True):
                table.setdefault(sampler, {}).setdefault(variant, {})[nfe] = fid
    return table
