"""Raw networks F: the SongUNet family, DDPM++ and NCSN++ (docs/paper.md section 3).

``build(arch, ...)`` is the one constructor the rest of the pipeline uses; its keyword arguments are
what snapshots store under ``config["network"]``.
"""

from __future__ import annotations

from collections.abc import Sequence

from fdm.nets.songunet import SongUNet

# What distinguishes the two architectures (Song et al. 2021, as configured by EDM).
ARCHITECTURES: dict[str, dict] = {
    "ddpmpp": dict(
        embedding_type="positional",  # 128-d sinusoidal, frequencies from 1 to 1e-4 inclusive
        channel_mult_noise=1,
        encoder_type="standard",
        decoder_type="standard",
        resample_filter=(1, 1),
    ),
    "ncsnpp": dict(
        embedding_type="fourier",  # 256-d random Fourier features, scale 16
        channel_mult_noise=2,
        encoder_type="residual",
        decoder_type="standard",
        resample_filter=(1, 3, 3, 1),
    ),
}

# Options shared by both architectures, with EDM's SongUNet defaults.
DEFAULT_OPTIONS: dict = dict(
    channel_mult_emb=4,
    num_blocks=4,
    attn_resolutions=(16,),
    dropout=0.10,
    label_dropout=0.0,
)


def build(
    arch: str,
    img_resolution: int,
    img_channels: int,
    label_dim: int = 0,
    augment_dim: int = 0,
    model_channels: int = 128,
    channel_mult: Sequence[int] = (2, 2, 2),
    **options,
) -> SongUNet:
    """Construct the raw network F for ``arch`` in {"ddpmpp", "ncsnpp"}.

    ``options`` override the architecture's settings and the shared defaults: channel_mult_emb,
    num_blocks, attn_resolutions, dropout, label_dropout, embedding_type, channel_mult_noise,
    encoder_type, decoder_type, resample_filter. Raises ValueError for an unknown arch or option.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown network architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    settings = {**DEFAULT_OPTIONS, **ARCHITECTURES[arch]}
    unknown = sorted(set(options) - set(settings))
    if unknown:
        raise ValueError(
            f"unknown network option(s) {', '.join(unknown)}; known options: {', '.join(sorted(settings))}"
        )
    settings.update(options)
    return SongUNet(
        img_resolution=img_resolution,
        img_channels=img_channels,
        label_dim=label_dim,
        augment_dim=augment_dim,
        model_channels=model_channels,
        channel_mult=channel_mult,
        **settings,
    )


__all__ = ["ARCHITECTURES", "DEFAULT_OPTIONS", "SongUNet", "build"]
