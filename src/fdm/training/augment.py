"""Non-leaking geometric augmentation with a 9-dimensional augmentation label (EDM arXiv 2206.00364, appendix; docs/paper.md section 3).

The training image is transformed at random and the network is told how (the label), so it can
learn the clean distribution at label zero while augmentation regularises it; sampling always
uses label zero. The transforms are those EDM and FDM train with:

====================  =====================  ===============================================  ===========================
transform             probability            parameter                                        label entries
====================  =====================  ===============================================  ===========================
x-flip                min(1, 1e8 p)          bit w ~ Bernoulli(1/2)                           w
y-flip                p                      bit w ~ Bernoulli(1/2)                           w
isotropic scale       p                      s = 2^(0.2 z)                                    log2 s
rotation              p                      theta ~ U(-pi, pi)                               cos theta - 1, sin theta
anisotropic scale     p                      s = 2^(0.2 z) along an axis at angle phi,        log2 s cos phi,
                                             phi ~ U(-pi, pi) with prob. 1/2, else 0          log2 s sin phi
translation           p                      (tx, ty) = 0.125 z (fractions of the size)       tx, ty
====================  =====================  ===============================================  ===========================

(z ~ N(0, 1).) Which draw drives what (``draw_augment_params``: uniforms u[0..10], normals z[0..3]):
u[0] gates the x-flip and u[1] < 1/2 is its bit; u[2] and u[3] the same for the y-flip; u[4] gates the
isotropic scale and z[0] sizes it; u[5] gates the rotation and theta = (2 u[6] - 1) pi; u[7] gates the
anisotropic scale, z[1] sizes it, u[8] < 1/2 turns its axis and phi = (2 u[9] - 1) pi; u[10] gates the
translation and z[2], z[3] size it. The x-flip multiplier 1e8 means: for any p > 0 half of the
images are mirrored. A transform that is not applied contributes zeros, so p = 0 gives the unchanged
image and a zero label.

Geometry is expressed in normalised coordinates (x to the right, y downwards, [-1, 1] across the
image); the content moves by M = T(2t) A(s, phi) R(theta) S(s_iso) and the output pixel at q reads
the input at M^-1 q. Rotation by theta turns x towards y, i.e. clockwise on screen.

Departure from EDM, documented: EDM resamples on a 2x upsampled image with a wavelet low-pass
filter and pads by reflection; here the warp is a single bilinear ``grid_sample`` with reflection
padding. Images that get no geometric transform are not resampled at all (exact identity).

Randomness is supplied by the caller as per-sample uniforms and normals (``draw_augment_params``),
so the transform of a sample depends only on that sample's generator.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AUGMENT_DIM = 9
NUM_UNIFORMS = 11
NUM_NORMALS = 4
XFLIP_MULTIPLIER = 1e8
SCALE_STD = 0.2  # In log2 units.
ANISO_STD = 0.2  # In log2 units.
ANISO_ROTATE_PROB = 0.5
TRANSLATE_STD = 0.125  # In fractions of the image size.


def draw_augment_params(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The random numbers one sample's augmentation needs: 11 uniforms and 4 normals (float64, CPU).

    The count is fixed whatever p is, so a generator that also draws other things stays aligned.
    """
    uniforms = torch.rand(NUM_UNIFORMS, generator=generator, dtype=torch.float64)
    normals = torch.randn(NUM_NORMALS, generator=generator, dtype=torch.float64)
    return uniforms, normals


def _rotation(angle: torch.Tensor) -> torch.Tensor:
    cos, sin = angle.cos(), angle.sin()
    zero, one = torch.zeros_like(angle), torch.ones_like(angle)
    return torch.stack([cos, -sin, zero, sin, cos, zero, zero, zero, one], dim=-1).reshape(-1, 3, 3)


def _scale(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    zero, one = torch.zeros_like(sx), torch.ones_like(sx)
    return torch.stack([sx, zero, zero, zero, sy, zero, zero, zero, one], dim=-1).reshape(-1, 3, 3)


def _translation(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    zero, one = torch.zeros_like(tx), torch.ones_like(tx)
    return torch.stack([one, zero, tx, zero, one, ty, zero, zero, one], dim=-1).reshape(-1, 3, 3)


def augment(
    images: torch.Tensor, p: float, uniforms: torch.Tensor, normals: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment ``images`` [N, C, H, W] with probability ``p`` per transform; returns (images, labels [N, 9]).

    ``uniforms`` [N, 11] and ``normals`` [N, 4] are the per-sample draws of ``draw_augment_params``.
    Labels come back in the images' dtype and device.
    """
    n = images.shape[0]
    if uniforms.shape != (n, NUM_UNIFORMS) or normals.shape != (n, NUM_NORMALS):
        raise ValueError(f"need uniforms [{n}, {NUM_UNIFORMS}] and normals [{n}, {NUM_NORMALS}]")
    u, z = uniforms.to(torch.float64), normals.to(torch.float64)
    zero = torch.zeros(n, dtype=torch.float64)

    def gate(index: int, probability: float) -> torch.Tensor:
        return u[:, index] < probability

    xflip = torch.where(gate(0, min(1.0, XFLIP_MULTIPLIER * p)), (u[:, 1] < 0.5).double(), zero)
    yflip = torch.where(gate(2, p), (u[:, 3] < 0.5).double(), zero)
    log2_scale = torch.where(gate(4, p), SCALE_STD * z[:, 0], zero)
    theta = torch.where(gate(5, p), (2 * u[:, 6] - 1) * math.pi, zero)
    log2_aniso = torch.where(gate(7, p), ANISO_STD * z[:, 1], zero)
    phi = torch.where(u[:, 8] < ANISO_ROTATE_PROB, (2 * u[:, 9] - 1) * math.pi, zero)
    translate_on = gate(10, p)
    tx = torch.where(translate_on, TRANSLATE_STD * z[:, 2], zero)
    ty = torch.where(translate_on, TRANSLATE_STD * z[:, 3], zero)

    labels = torch.stack(
        [
            xflip,
            yflip,
            log2_scale,
            theta.cos() - 1,
            theta.sin(),
            log2_aniso * phi.cos(),
            log2_aniso * phi.sin(),
            tx,
            ty,
        ],
        dim=1,
    )

    out = torch.where(xflip.bool().to(images.device).view(-1, 1, 1, 1), images.flip(3), images)
    out = torch.where(yflip.bool().to(images.device).view(-1, 1, 1, 1), out.flip(2), out)

    warped = (log2_scale != 0) | (theta != 0) | (log2_aniso != 0) | (tx != 0) | (ty != 0)
    if warped.any():
        s_iso = log2_scale.exp2()
        s_aniso = log2_aniso.exp2()
        aniso = _rotation(phi) @ _scale(s_aniso, 1 / s_aniso) @ _rotation(-phi)
        forward = _translation(2 * tx, 2 * ty) @ aniso @ _rotation(theta) @ _scale(s_iso, s_iso)
        index = warped.nonzero().flatten()
        theta_grid = torch.linalg.inv(forward[index])[:, :2, :].to(images.dtype).to(images.device)
        selected = out[index.to(images.device)]
        grid = F.affine_grid(theta_grid, list(selected.shape), align_corners=False)
        resampled = F.grid_sample(
            selected, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )
        out = out.index_copy(0, index.to(images.device), resampled)
    return out, labels.to(images.dtype).to(images.device)
