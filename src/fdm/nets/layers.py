"""Layers of the SongUNet family: DDPM++ / NCSN++ in the form EDM trains them (docs/paper.md section 3).

Song et al. 2021, "Score-Based Generative Modeling through Stochastic Differential Equations";
Karras et al. 2022 (EDM), whose reimplementation FDM trains unchanged. Weight initialisation: every
convolution and linear layer draws its weight from Xavier-uniform times a per-layer gain (1; sqrt(0.2)
for the q/k/v projection; 1e-5 for the last layer of each residual branch and of the output head) and
starts with a zero bias.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor

SKIP_SCALE = math.sqrt(0.5)  # Every residual sum is scaled back to unit variance.
NORM_EPS = 1e-6
GAIN_ATTN = math.sqrt(0.2)  # Gain of the q/k/v projection.
GAIN_LAST = 1e-5  # Gain of the layer closing a residual branch: the branch starts near zero.


def xavier_uniform(shape: Sequence[int], fan_in: int, fan_out: int, gain: float = 1.0) -> Tensor:
    """Draw from U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)) (Glorot and Bengio 2010)."""
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return (torch.rand(*shape) * 2.0 - 1.0) * bound


class Linear(nn.Module):
    """Fully connected layer with Xavier-uniform weight (times ``gain``) and zero bias."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, gain: float = 1.0):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(
            xavier_uniform((out_features, in_features), in_features, out_features, gain)
        )
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)


class Conv2d(nn.Module):
    """Square 2-D convolution, stride 1, with Xavier-uniform weight (times ``gain``) and zero bias.

    ``padding`` defaults to ``kernel // 2`` (same size output); NCSN++'s residual encoder path pads more
    and lets a following FIR filter do the downsampling.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, gain: float = 1.0, padding: int | None = None
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.padding = kernel // 2 if padding is None else padding
        fan_in, fan_out = in_channels * kernel * kernel, out_channels * kernel * kernel
        shape = (out_channels, in_channels, kernel, kernel)
        self.weight = nn.Parameter(xavier_uniform(shape, fan_in, fan_out, gain))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, padding=self.padding)


class Resample(nn.Module):
    """Up- or downsample by 2 with the separable FIR filter outer(f, f) / sum(f)^2, one channel at a time.

    [1, 1] is box downsampling / nearest-neighbour upsampling (DDPM++); [1, 3, 3, 1] is the smoother
    binomial filter of NCSN++. Upsampling multiplies the filter by 4 so a constant image stays constant.
    ``padding`` defaults to (len(f) - 1) // 2, which maps H to 2H or H / 2 for the even filters used here.
    """

    def __init__(
        self, channels: int, direction: str, fir: Sequence[float] = (1, 1), padding: int | None = None
    ):
        super().__init__()
        if direction not in ("up", "down"):
            raise ValueError(f"resample direction must be 'up' or 'down', got {direction!r}")
        f = torch.as_tensor(fir, dtype=torch.float32)
        kernel = torch.outer(f, f) / f.sum() ** 2
        if direction == "up":
            kernel = kernel * 4
        self.direction = direction
        self.channels = channels
        self.padding = (len(fir) - 1) // 2 if padding is None else padding
        # A constant of the architecture, rebuilt from the config: kept out of the state dict.
        self.register_buffer(
            "kernel", kernel.expand(channels, 1, *kernel.shape).contiguous(), persistent=False
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.direction == "up":
            return F.conv_transpose2d(x, self.kernel, stride=2, padding=self.padding, groups=self.channels)
        return F.conv2d(x, self.kernel, stride=2, padding=self.padding, groups=self.channels)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with min(32, channels // 4) groups (at least 4 channels per group) and eps 1e-6."""
    groups = min(32, channels // 4)
    if groups < 1 or channels % groups:
        raise ValueError(
            f"GroupNorm over {channels} channels needs a channel count divisible by min(32, C // 4) "
            f"(use model_channels a multiple of 4, or of 32 from 128 channels up)"
        )
    return nn.GroupNorm(groups, channels, eps=NORM_EPS)


class PositionalEmbedding(nn.Module):
    """Sinusoidal embedding of the noise label (DDPM++): [sin(c w_k), cos(c w_k)].

    w_k = (1 / max_positions) ** (k / (K - 1)) for k = 0, ..., K - 1, K = num_channels / 2, so the
    frequencies run from 1 down to exactly 1 / max_positions (the ``endpoint=True`` spacing).
    """

    def __init__(self, num_channels: int, max_positions: float = 10000.0):
        super().__init__()
        half = num_channels // 2
        exponents = torch.arange(half, dtype=torch.float32) / max(half - 1, 1)
        self.register_buffer("freqs", (1.0 / max_positions) ** exponents, persistent=False)

    def forward(self, noise_labels: Tensor) -> Tensor:
        angles = torch.outer(noise_labels, self.freqs.to(noise_labels.dtype))
        return torch.cat([angles.sin(), angles.cos()], dim=1)


class FourierEmbedding(nn.Module):
    """Random Fourier features of the noise label (NCSN++): [sin(2 pi c b_k), cos(2 pi c b_k)].

    b_k ~ N(0, scale^2) are drawn once at construction and kept in the state dict (they are not trained).
    """

    def __init__(self, num_channels: int, scale: float = 16.0):
        super().__init__()
        self.register_buffer("freqs", torch.randn(num_channels // 2) * scale)

    def forward(self, noise_labels: Tensor) -> Tensor:
        angles = torch.outer(noise_labels, (2 * math.pi * self.freqs).to(noise_labels.dtype))
        return torch.cat([angles.sin(), angles.cos()], dim=1)


class UNetBlock(nn.Module):
    """Pre-activation residual block with an additive noise embedding and optional self-attention.

    x -> GroupNorm, SiLU, [resample], conv3x3, + Linear(emb), GroupNorm, SiLU, dropout, conv3x3,
    plus the shortcut (a resampling 1x1 conv when the shape changes), times sqrt(1/2). With attention,
    a single-head self-attention over all pixels follows, as a second residual step times sqrt(1/2).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int,
        resample: str | None = None,
        attention: bool = False,
        dropout: float = 0.0,
        resample_filter: Sequence[float] = (1, 1),
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.dropout = dropout
        self.resample = Resample(in_channels, resample, resample_filter) if resample else None
        self.norm0 = group_norm(in_channels)
        self.conv0 = Conv2d(in_channels, out_channels, 3)
        self.affine = Linear(emb_channels, out_channels)
        self.norm1 = group_norm(out_channels)
        self.conv1 = Conv2d(out_channels, out_channels, 3, gain=GAIN_LAST)
        needs_projection = in_channels != out_channels or resample is not None
        self.skip = Conv2d(in_channels, out_channels, 1) if needs_projection else None
        self.attention = attention
        if attention:
            self.norm2 = group_norm(out_channels)
            # Per-pixel projections (1x1 convolutions), applied to (N, HW, C) rows.
            self.qkv = Linear(out_channels, 3 * out_channels, gain=GAIN_ATTN)
            self.proj = Linear(out_channels, out_channels, gain=GAIN_LAST)

    def _resampled(self, x: Tensor) -> Tensor:
        return x if self.resample is None else self.resample(x)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv0(self._resampled(F.silu(self.norm0(x))))
        h = h.add_(self.affine(emb)[:, :, None, None])  # In place: the conv's backward needs no output.
        h = F.silu(self.norm1(h))
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        shortcut = self._resampled(x)
        if self.skip is not None:
            shortcut = self.skip(shortcut)
        x = h.add_(shortcut).mul_(SKIP_SCALE)
        if self.attention:
            x = self._self_attention(x).add_(x).mul_(SKIP_SCALE)
        return x

    def _self_attention(self, x: Tensor) -> Tensor:
        n, c, height, width = x.shape
        pixels = self.norm2(x).flatten(2).transpose(1, 2)  # (N, HW, C)
        q, k, v = self.qkv(pixels).chunk(3, dim=-1)
        # softmax(q k^T / sqrt(C)) v over the HW pixels, one head.
        a = F.scaled_dot_product_attention(q, k, v)
        return self.proj(a).transpose(1, 2).reshape(n, c, height, width)
