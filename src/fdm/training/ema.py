"""Exponential moving average of the weights, parameterised by a half-life in images (EDM section 5).

After an optimizer step on a batch of B images, every EMA parameter moves as
``ema <- beta ema + (1 - beta) theta`` with ``beta = 0.5 ** (B / h)``: the weight of an old value
halves every ``h`` images. With a ramp-up ratio r the half-life grows with training,
``h = min(halflife, r * images_seen)``, so early (poor) weights are forgotten quickly; at
``images_seen = 0`` the half-life is 0, beta is 0 and the EMA equals the weights.
"""

from __future__ import annotations

import torch


def ema_halflife_nimg(halflife_kimg: float, images_seen: int, rampup_ratio: float | None) -> float:
    """Half-life in images: ``halflife_kimg * 1000``, capped by ``rampup_ratio * images_seen`` when given."""
    halflife = halflife_kimg * 1000
    if rampup_ratio is not None:
        halflife = min(halflife, images_seen * rampup_ratio)
    return halflife


def ema_beta(batch: int, images_seen: int, halflife_kimg: float, rampup_ratio: float | None) -> float:
    """The decay of one EMA update after a batch of ``batch`` images: ``0.5 ** (batch / halflife_nimg)``."""
    halflife = ema_halflife_nimg(halflife_kimg, images_seen, rampup_ratio)
    return 0.5 ** (batch / max(halflife, 1e-8))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, beta: float) -> None:
    """``ema_param <- beta * ema_param + (1 - beta) * param`` for every parameter (buffers are constants)."""
    for ema_param, param in zip(ema.parameters(), model.parameters(), strict=True):
        ema_param.copy_(param.detach().lerp(ema_param, beta))
