"""The embedded default dataset: scikit-learn's 1,797 labelled 8x8 handwritten digits.

The digits ship inside scikit-learn (UCI "Optical Recognition of Handwritten Digits", test
part), so preparing them needs no network. Each pixel counts the set pixels of a 4x4 block of
a 32x32 bitmap, an integer 0..16; we map it to 0..255 as round(v * 255 / 16) and store one
grayscale channel at 16x16, upsampled 2x with bilinear interpolation.

Why 16x16 and bilinear (see docs/datasets.md): the smoke networks downsample once
(channel_mult (1, 2)) and attend at 16x16, so 8x8 would leave a 4x4 bottom level and no
attention; zero-padding to 16x16 would spend three quarters of every image on a constant
border. Among PIL's 2x upsamplers, bilinear is the only smooth one without ringing: every
output pixel is a convex combination of source pixels, so nothing is clipped (bicubic and
Lanczos overshoot and clip about a quarter of the pixels) and the images have the lowest total
variation, which is what a small network learns fastest on a CPU.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import PIL.Image

from fdm.data.archive import Item

RESOLUTION = 16
NUM_IMAGES = 1797


def digits_items() -> Iterator[Item]:
    """The 1,797 digits as 16x16 grayscale items labelled 0-9, in scikit-learn's order."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    levels = np.round(digits.images * (255 / 16)).astype(np.uint8)
    for i, (pixels, label) in enumerate(zip(levels, digits.target, strict=True)):
        image = PIL.Image.fromarray(pixels, "L").resize((RESOLUTION, RESOLUTION), PIL.Image.BILINEAR)
        yield Item(f"digits[{i}]", np.asarray(image)[:, :, None], int(label))
