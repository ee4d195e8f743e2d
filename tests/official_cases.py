"""The cross-check against the authors' code: the cases, our side of them, and the tolerances.

FDM's reference implementation (https://github.com/sail-sg/FDM, built on EDM's
https://github.com/NVlabs/edm) is run by ``bench/official_crosscheck.py`` on the cases defined here; it
writes what the authors' code produced to ``tests/fixtures/official/``. ``tests/test_official_equivalence.py``
rebuilds our side of every case from this module alone (no authors' code at test time) and compares.

Our networks are ``fdm.nets.build(**config)`` under ``torch.manual_seed(seed)``, then every parameter
moved by ``PERTURBATION`` times a standard normal draw from ``torch.Generator().manual_seed(seed)``, in
``named_parameters()`` order. The move makes every branch matter: at initialisation the last layer of
each residual branch and the output head are scaled by 1e-5 (EDM's init), so F would be ~1e-5 and a
wrong branch could hide below float32 precision of D.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from fdm import names
from fdm.checkpoints.convert import PRECONDS
from fdm.diffusion import FDM, VP, Formulation, formulation
from fdm.nets import build

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "official"
AUTHORS_REPOSITORY = "https://github.com/sail-sg/FDM"

PERTURBATION = 0.05


def _small(arch, img_resolution, img_channels, label_dim, attn_resolutions, channel_mult=(1, 2)) -> dict:
    return dict(
        arch=arch,
        img_resolution=img_resolution,
        img_channels=img_channels,
        label_dim=label_dim,
        augment_dim=9,
        model_channels=16,
        channel_mult=list(channel_mult),
        num_blocks=1,
        attn_resolutions=list(attn_resolutions),
        dropout=0.0,
    )


# The networks (``fdm.nets.build`` arguments) and the seed of their weights. The first four are the
# 16x16, two-resolution networks of the denoiser, loss and gradient checks (both architectures, with and
# without class labels, all with augmentation labels; attention at each resolution); the last two are
# one-resolution 8x8 networks for the samplers, which call the network 19 to 35 times per image.
NETWORKS: dict[str, dict] = {
    "ddpmpp_cond": _small("ddpmpp", 16, 3, 10, [16]),
    "ddpmpp_uncond": _small("ddpmpp", 16, 1, 0, [8]),
    "ncsnpp_cond": _small("ncsnpp", 16, 3, 10, [8]),
    "ncsnpp_uncond": _small("ncsnpp", 16, 1, 0, [16]),
    "ddpmpp_cond_8": _small("ddpmpp", 8, 3, 10, [], channel_mult=[1]),
    "ncsnpp_uncond_8": _small("ncsnpp", 8, 1, 0, [], channel_mult=[1]),
}
DENOISER_NETWORKS = ("ddpmpp_cond", "ddpmpp_uncond", "ncsnpp_cond", "ncsnpp_uncond")
WEIGHT_SEEDS = {name: seed for seed, name in enumerate(NETWORKS)}

# Training pickles the bench writes with the authors' code (their weights: their initialisation under
# IMPORT_SEED + the formulation's index, then moved as PERTURBATION says) and reads with
# `fdm import-checkpoint`: per preconditioner, the network above whose shapes it takes and the SongUNet
# options changed from its architecture's, so that every encoder and decoder type is imported. The VP
# classes take DDPM++: our import of VP uses log1p, and NCSN++ shows their float32 rounding below
# sigma = 1 (the bench's "D, log1p VP" rows).
IMPORT_CASES: dict[str, dict] = {
    "vp": dict(network="ddpmpp_cond", changes={}),
    "ve": dict(network="ncsnpp_uncond", changes={}),
    "edm": dict(network="ddpmpp_cond", changes=dict(encoder_type="skip", decoder_type="skip")),
    "fdm_vp": dict(network="ddpmpp_uncond", changes={}),
    "fdm_ve": dict(network="ncsnpp_cond", changes={}),
    "fdm_edm": dict(network="ncsnpp_uncond", changes=dict(decoder_type="skip")),
}
IMPORT_SEED = 100

# The formulations the authors' code has (a preconditioner class each, fdm.checkpoints.convert.PRECONDS),
# in the registry's order: the fixtures hold these; any other formulation is beyond the paper.
FORMULATIONS = tuple(name for name in names.FORMULATIONS if name in PRECONDS.values())
WARMUP = 200  # FDM's loss-weight warmup: the authors' CIFAR-10 FDM-EDM setting (--warmup_ite=200).
# The authors build every FDM preconditioner with fdm_multiplier=2 (their train.py default). Their
# FDM_VEPrecond ignores it (m = 1 in effect), so our fdm_ve uses multiplier 1 to reproduce it.
AUTHORS_MULTIPLIER = 2.0
FORMULATION_OPTIONS: dict[str, dict] = {
    "fdm_vp": dict(multiplier=2.0, warmup=WARMUP),
    "fdm_ve": dict(multiplier=1.0, warmup=WARMUP),
    "fdm_edm": dict(multiplier=2.0, warmup=WARMUP),
}

BATCH = 8  # images per denoiser / loss case, one sigma each
LOSS_STEPS = (0, 100, 199, 200, 201)  # the FDM weight cap around the end of its warmup
GRADIENT_STEP = 0  # gradients at step 0, where FDM's cap (5) binds for most samples
GRADIENT_TENSORS = ("map_layer0.bias", "out_heads.0.2.weight", "dec_mid.0.qkv.weight")

SAMPLER_NETWORK = {
    "vp": "ddpmpp_cond_8",
    "ve": "ncsnpp_uncond_8",
    "edm": "ddpmpp_cond_8",
    "fdm_vp": "ddpmpp_cond_8",
    "fdm_ve": "ncsnpp_uncond_8",
    "fdm_edm": "ddpmpp_cond_8",
}
SEEDS = (0, 1, 2, 3)
HEUN_STEPS = (10, 18)  # the authors' edm_sampler (generate.py --solver=edm --steps=N): NFE 2N - 1
DPM_NFE = (5, 10, 25)  # generate.py --solver=dpm --steps=N: DPM-Solver++ singlestep order 3, NFE N

# Tolerances, as a fraction of a scale stated with each (see ``scaled_error``).
# D: float32 forward passes that add, reduce and fuse in a different order (single-head attention by
# einsum and an fp32 softmax against scaled_dot_product_attention; biases added after the convolution
# against inside it; the NCSN++ residual path's bias before against after its FIR filter). Measured up
# to 1.1e-6 of max(1, max |D|) at each sigma; 1e-5 leaves room for other CPUs and BLAS builds.
DENOISER_RTOL = 1e-5
# Per-sample loss lambda ||D - y||^2: to first order an error dD in D moves it by at most
# 2 lambda sum |D - y| |dD|, and |dD| is bounded as above, so the scale is lambda ``residual_scale``. At
# small sigma D - y is a small difference of O(1) numbers: the loss inherits D's absolute error.
# Measured up to 8e-8 (the bound is loose: errors of different pixels do not all add up).
LOSS_RTOL = 1e-5
# Gradients: backward passes through the same differently-ordered float32 operations. The scale of a
# gradient element is the largest element of its tensor; of a parameter's gradient sum, the gradient's L1
# norm (which bounds the sum's rounding); of its L2 norm, the norm itself. Measured up to 1.0e-5 (an
# element), 5e-6 (sums, norms).
GRADIENT_RTOL = 1e-4
# Images: both samplers integrate in float64, but each step calls a float32 denoiser whose last bits
# differ (see D), and the authors' DPM-Solver++ computes its time steps and step coefficients in float32
# (dpm_solver.py) where ours uses float64. Measured up to 4.4e-7 of max(1, max |x|) per image. The
# uint8 pixels can then differ only where an image lies within this tolerance of a rounding boundary
# (``uint8_mismatches``), which no pixel did when the fixtures were made.
IMAGE_RTOL = 1e-5


def layouts() -> dict[str, dict]:
    """The network configurations whose state-dict layout the fixtures record from the authors' SongUNet:
    each of NETWORKS, and each import case's network with its changes (``import/<formulation>``)."""
    result = dict(NETWORKS)
    for name, case in IMPORT_CASES.items():
        result[f"import/{name}"] = {**NETWORKS[case["network"]], **case["changes"]}
    return result


def state_layout(state: dict) -> np.ndarray:
    """A state dict's names and shapes, sorted by name: ["name [d0, d1, ...]", ...]."""
    return np.array([f"{name} {list(state[name].shape)}" for name in sorted(state)])


def network(name: str) -> torch.nn.Module:
    """Our network ``name`` with its weights: built under its seed, then every parameter perturbed."""
    seed = WEIGHT_SEEDS[name]
    torch.manual_seed(seed)
    net = build(**NETWORKS[name])
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(PERTURBATION * torch.randn(parameter.shape, generator=generator))
    return net


@dataclasses.dataclass(frozen=True)
class VPFloat32Log(VP):
    """VP whose sigma -> t inverse evaluates ln(1 + sigma^2) in the input's precision, as EDM's VPPrecond.

    EDM Table 1 gives t(sigma) = (sqrt(beta_min^2 + 2 beta_d ln(1 + sigma^2)) - beta_min) / beta_d. The
    authors' code computes ln(1 + sigma^2) on float32 sigma, which loses most digits for sigma << 1
    (1 + 1e-6 keeps one significant digit of the 1e-6); ``fdm.diffusion.VP`` uses log1p. The difference
    in c_noise = 999 t is up to 5e-4 at sigma_min. Only the checks that need float32 agreement use this.
    """

    def t_of_sigma(self, sigma):
        if not isinstance(sigma, torch.Tensor):
            sigma = torch.tensor(sigma, dtype=torch.float64)
        return (
            (self.beta_min**2 + 2 * self.beta_d * (1 + sigma**2).log()).sqrt() - self.beta_min
        ) / self.beta_d


def our_formulation(name: str, vp_float32_log: bool = True) -> Formulation:
    """Our formulation ``name`` with the case's options; VP's inverse rounded as the authors' if asked."""
    result = formulation(name, **FORMULATION_OPTIONS.get(name, {}))
    if not (vp_float32_log and names.base_of(name) == "vp"):
        return result
    if isinstance(result, FDM):
        return dataclasses.replace(result, base=VPFloat32Log())
    return VPFloat32Log()


def scaled_error(ours, theirs, scale) -> float:
    """max |ours - theirs| / scale, with ``scale`` broadcast against the difference."""
    difference = np.abs(np.asarray(ours, dtype=np.float64) - np.asarray(theirs, dtype=np.float64))
    return float((difference / np.asarray(scale, dtype=np.float64)).max())


def row_scale(values) -> np.ndarray:
    """max(1, max |value|) per image (leading axis), shaped to broadcast over the image."""
    values = np.asarray(values, dtype=np.float64)
    flat = np.abs(values.reshape(values.shape[0], -1)).max(axis=1)
    return np.maximum(1.0, flat).reshape(-1, *[1] * (values.ndim - 1))


def residual_scale(denoised, y) -> np.ndarray:
    """2 sum |D - y| max(1, max |D|) per sample; times lambda, the first-order effect of D's error on the loss."""
    residual = np.abs(np.asarray(denoised, dtype=np.float64) - np.asarray(y, dtype=np.float64))
    return 2 * residual.reshape(len(residual), -1).sum(axis=1) * row_scale(denoised).reshape(-1)


def uint8_mismatches(ours_uint8, theirs_uint8, theirs_float, tolerance) -> tuple[int, int]:
    """(pixels whose uint8 values differ, those of them not within ``tolerance`` of a rounding boundary).

    The uint8 conversion truncates x * 127.5 + 128, so two images equal within ``tolerance`` may still
    differ by one level where a pixel lies that close to an integer; any other difference is an error.
    ``theirs_float`` is [N, C, H, W], ``tolerance`` broadcasts against it; the uint8 images are NHWC.
    """
    ours_uint8, theirs_uint8 = np.asarray(ours_uint8), np.asarray(theirs_uint8)
    level = np.asarray(theirs_float, dtype=np.float64) * 127.5 + 128
    reach = np.broadcast_to(np.asarray(tolerance, dtype=np.float64) * 127.5, level.shape)
    near_boundary = np.abs(level - np.round(level)) <= reach
    near_boundary = near_boundary.transpose(0, 2, 3, 1)
    differ = ours_uint8 != theirs_uint8
    one_level = np.abs(ours_uint8.astype(np.int16) - theirs_uint8.astype(np.int16)) <= 1
    return int(differ.sum()), int((differ & ~(near_boundary & one_level)).sum())
