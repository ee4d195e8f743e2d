"""The SongUNet: DDPM++ and NCSN++ (Song et al. 2021) as configured by EDM and FDM.

Song et al. 2021; Karras et al. 2022 (EDM); docs/paper.md section 3. The network is the raw F of
D(x; sigma) = c_skip x + c_out F(c_in x; c_noise): it sees the noise label c_noise, never sigma.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fdm.nets.layers import (
    GAIN_LAST,
    Conv2d,
    FourierEmbedding,
    Linear,
    PositionalEmbedding,
    Resample,
    UNetBlock,
    group_norm,
)

Tensor = torch.Tensor

EMBEDDING_TYPES = ("positional", "fourier")
ENCODER_TYPES = ("standard", "skip", "residual")
DECODER_TYPES = ("standard", "skip")


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


class SongUNet(nn.Module):
    """U-Net over ``len(channel_mult)`` resolutions, conditioned on a noise-label embedding.

    Mapping: embed(noise label) [+ Linear(one-hot label * sqrt(label_dim))] [+ Linear(augment label)],
    then two Linear + SiLU layers to ``model_channels * channel_mult_emb`` features, added in every block.
    Encoder: a 3x3 conv, then per resolution a downsampling block (except the first) and ``num_blocks``
    blocks; ``encoder_type`` "skip" adds a downsampled copy of the image at every level, "residual" a
    running image pyramid through strided 3x3 convs. Decoder: two blocks at the lowest resolution (the
    first with attention), then per resolution an upsampling block (except the lowest) and
    ``num_blocks + 1`` blocks, each fed one encoder activation by concatenation; the output is
    GroupNorm, SiLU, 3x3 conv to ``img_channels`` ("skip" decoder: one such head per resolution,
    upsampled and summed). Self-attention sits in every encoder block and the last decoder block of each
    resolution listed in ``attn_resolutions``.
    """

    def __init__(
        self,
        img_resolution: int,
        img_channels: int,
        label_dim: int = 0,
        augment_dim: int = 0,
        model_channels: int = 128,
        channel_mult: Sequence[int] = (2, 2, 2),
        channel_mult_emb: int = 4,
        num_blocks: int = 4,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.10,
        label_dropout: float = 0.0,
        embedding_type: str = "positional",
        channel_mult_noise: int = 1,
        encoder_type: str = "standard",
        decoder_type: str = "standard",
        resample_filter: Sequence[float] = (1, 1),
    ):
        super().__init__()
        _check_choice("embedding_type", embedding_type, EMBEDDING_TYPES)
        _check_choice("encoder_type", encoder_type, ENCODER_TYPES)
        _check_choice("decoder_type", decoder_type, DECODER_TYPES)
        channel_mult = tuple(int(m) for m in channel_mult)
        levels = len(channel_mult)
        if levels == 0 or min(channel_mult) < 1:
            raise ValueError(
                f"channel_mult must be a non-empty list of positive integers; got {channel_mult}"
            )
        if img_resolution < 1 or img_resolution % 2 ** (levels - 1):
            raise ValueError(
                f"img_resolution {img_resolution} must be divisible by 2^{levels - 1} "
                f"for {levels} resolutions (channel_mult {list(channel_mult)})"
            )
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be at least 1; got {num_blocks}")
        if not 0.0 <= dropout < 1.0 or not 0.0 <= label_dropout <= 1.0:
            raise ValueError(
                f"need 0 <= dropout < 1 and 0 <= label_dropout <= 1; got {dropout}, {label_dropout}"
            )

        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.label_dim = label_dim
        self.augment_dim = augment_dim
        self.label_dropout = label_dropout
        self.encoder_type = encoder_type
        self.decoder_type = decoder_type
        attn_resolutions = {int(r) for r in attn_resolutions}
        noise_channels = model_channels * channel_mult_noise
        emb_channels = model_channels * channel_mult_emb

        def block(cin, cout, **kw):
            return UNetBlock(cin, cout, emb_channels, dropout=dropout, resample_filter=resample_filter, **kw)

        # Mapping network: noise label (+ class label + augmentation label) -> embedding.
        if embedding_type == "positional":
            self.map_noise = PositionalEmbedding(noise_channels)
        else:
            self.map_noise = FourierEmbedding(noise_channels)
        self.map_label = Linear(label_dim, noise_channels) if label_dim else None
        self.map_augment = Linear(augment_dim, noise_channels, bias=False) if augment_dim else None
        self.map_layer0 = Linear(noise_channels, emb_channels)
        self.map_layer1 = Linear(emb_channels, emb_channels)

        # Encoder. `skip_channels` records, in order, the width of every activation handed to the decoder.
        self.stem = Conv2d(img_channels, model_channels, 3)
        skip_channels = [model_channels]
        self.enc_down = nn.ModuleList()  # one per level after the first
        self.enc_aux_down = nn.ModuleList()  # "skip" encoder: the image, downsampled level by level
        self.enc_aux = nn.ModuleList()  # "skip" / "residual" encoders: image path into the features
        self.enc_blocks = nn.ModuleList()
        channels, aux_channels = model_channels, img_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level > 0:
                self.enc_down.append(block(channels, channels, resample="down"))
                if encoder_type == "skip":
                    self.enc_aux_down.append(Resample(img_channels, "down", resample_filter))
                    self.enc_aux.append(Conv2d(img_channels, channels, 1))
                elif encoder_type == "residual":
                    # 3x3 conv at the finer resolution, padded by the filter's reach, then FIR-downsample.
                    pad = (len(resample_filter) - 1) // 2
                    self.enc_aux.append(
                        nn.Sequential(
                            Conv2d(aux_channels, channels, 3, padding=1 + pad),
                            Resample(channels, "down", resample_filter, padding=0),
                        )
                    )
                    aux_channels = channels
                skip_channels.append(channels)
            blocks = nn.ModuleList()
            for _ in range(num_blocks):
                blocks.append(block(channels, model_channels * mult, attention=res in attn_resolutions))
                channels = model_channels * mult
                skip_channels.append(channels)
            self.enc_blocks.append(blocks)

        # Decoder, from the lowest resolution up; per-level containers are indexed by level.
        self.dec_mid = nn.ModuleList([block(channels, channels, attention=True), block(channels, channels)])
        dec_up, dec_blocks = {}, {}
        self.out_heads = nn.ModuleDict()  # GroupNorm, SiLU, conv3x3 to the image channels
        self.out_up = nn.ModuleDict()  # "skip" decoder: upsampling of the running output
        for level in reversed(range(levels)):
            res = img_resolution >> level
            if level < levels - 1:
                dec_up[level] = block(channels, channels, resample="up")
            blocks = nn.ModuleList()
            for idx in range(num_blocks + 1):
                cin = channels + skip_channels.pop()
                channels = model_channels * channel_mult[level]
                blocks.append(block(cin, channels, attention=idx == num_blocks and res in attn_resolutions))
            dec_blocks[level] = blocks
            if decoder_type == "skip" or level == 0:
                self.out_heads[str(level)] = nn.Sequential(
                    group_norm(channels), nn.SiLU(), Conv2d(channels, img_channels, 3, gain=GAIN_LAST)
                )
                if decoder_type == "skip" and level < levels - 1:
                    self.out_up[str(level)] = Resample(img_channels, "up", resample_filter)
        self.dec_up = nn.ModuleList(dec_up[level] for level in range(levels - 1))
        self.dec_blocks = nn.ModuleList(dec_blocks[level] for level in range(levels))

    def embed(
        self, noise_labels: Tensor, class_labels: Tensor | None, augment_labels: Tensor | None
    ) -> Tensor:
        """The conditioning vector added in every block, shape (N, model_channels * channel_mult_emb)."""
        emb = self.map_noise(noise_labels)
        if self.map_label is not None:
            labels = class_labels
            if labels is None:  # The all-zero label is what label dropout trains as "no label".
                labels = torch.zeros(1, self.label_dim, device=emb.device, dtype=emb.dtype)
            labels = labels.to(emb.dtype).reshape(-1, self.label_dim)
            if self.training and self.label_dropout:
                keep = torch.rand(emb.shape[0], 1, device=emb.device) >= self.label_dropout
                labels = labels * keep.to(labels.dtype)
            emb = emb + self.map_label(labels * math.sqrt(self.label_dim))
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels.to(emb.dtype).reshape(-1, self.augment_dim))
        emb = F.silu(self.map_layer0(emb))
        return F.silu(self.map_layer1(emb))

    def forward(
        self,
        x: Tensor,
        noise_labels: Tensor,
        class_labels: Tensor | None = None,
        augment_labels: Tensor | None = None,
    ) -> Tensor:
        """F(x; c_noise): x (N, C, H, W), noise_labels (N,) or a scalar -> tensor shaped like x.

        class_labels: (N, label_dim) one-hot (or soft) labels; None means the all-zero "no label".
        augment_labels: (N, augment_dim) from the augmentation pipeline; None means no augmentation.
        """
        if class_labels is not None and not self.label_dim:
            raise ValueError("class_labels given to an unconditional network (label_dim=0)")
        if augment_labels is not None and not self.augment_dim:
            raise ValueError("augment_labels given to a network built with augment_dim=0")
        noise_labels = torch.as_tensor(noise_labels, dtype=x.dtype, device=x.device).reshape(-1)
        if noise_labels.numel() == 1:
            noise_labels = noise_labels.expand(x.shape[0])
        emb = self.embed(noise_labels, class_labels, augment_labels)

        # Encoder.
        aux = x
        x = self.stem(x)
        skips = [x]
        for level, blocks in enumerate(self.enc_blocks):
            if level > 0:
                x = self.enc_down[level - 1](x, emb)
                if self.encoder_type == "skip":
                    aux = self.enc_aux_down[level - 1](aux)
                    x = x + self.enc_aux[level - 1](aux)
                elif self.encoder_type == "residual":
                    x = aux = (x + self.enc_aux[level - 1](aux)) * math.sqrt(0.5)
                skips.append(x)
            for block in blocks:
                x = block(x, emb)
                skips.append(x)

        # Decoder.
        for block in self.dec_mid:
            x = block(x, emb)
        out = None
        for level in reversed(range(len(self.dec_blocks))):
            if level < len(self.dec_up):
                x = self.dec_up[level](x, emb)
            for block in self.dec_blocks[level]:
                x = block(torch.cat([x, skips.pop()], dim=1), emb)
            if str(level) in self.out_heads:
                head = self.out_heads[str(level)](x)
                out = head if out is None else self.out_up[str(level)](out) + head
        return out
