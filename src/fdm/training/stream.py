"""The random draws of training, keyed by (seed, global sample index k) only (loop.py, step 1).

Sample k's noise level sigma, noise n ~ N(0, I) and augmentation come from one generator seeded with
``derive_seed(seed, "sample", k)``; its data index is position k mod N of a permutation of the dataset
drawn for epoch k // N from ``derive_seed(seed, "order", epoch)``. Nothing here depends on how samples
are split over processes, accumulation rounds or resumed runs.
"""

from __future__ import annotations

import numpy as np
import torch

from fdm.seeding import generator
from fdm.training.augment import draw_augment_params


class SampleStream:
    """The random draws of training sample k, a pure function of (seed, k).

    ``draw(ks)`` returns the data indices, sigma [n], noise [n, C, H, W] and, when augmenting, the
    augmentation draws [n, 11] and [n, 4], all on the CPU.
    """

    def __init__(self, seed: int, num_items: int, formulation, image_shape, augmenting: bool):
        self.seed, self.num_items, self.formulation = seed, num_items, formulation
        self.image_shape, self.augmenting = tuple(image_shape), augmenting
        self._orders: dict[int, torch.Tensor] = {}

    def data_index(self, k: int) -> int:
        epoch, position = divmod(k, self.num_items)
        if epoch not in self._orders:
            if len(self._orders) >= 2:
                self._orders.pop(min(self._orders))
            self._orders[epoch] = torch.randperm(
                self.num_items, generator=generator(self.seed, "order", epoch)
            )
        return int(self._orders[epoch][position])

    def draw(self, ks: list[int]):
        sigmas, noises, uniforms, normals = [], [], [], []
        for k in ks:
            g = generator(self.seed, "sample", k)
            sigmas.append(self.formulation.sample_sigma(1, g))
            noises.append(torch.randn(self.image_shape, generator=g))
            if self.augmenting:
                u, z = draw_augment_params(g)
                uniforms.append(u)
                normals.append(z)
        indices = np.array([self.data_index(k) for k in ks], dtype=np.int64)
        augment_draws = (torch.stack(uniforms), torch.stack(normals)) if self.augmenting else None
        return indices, torch.cat(sigmas), torch.stack(noises), augment_draws
