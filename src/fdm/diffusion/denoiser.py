"""The denoiser D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma)).

EDM eq. 7. The raw network F never sees sigma, only c_noise; everything downstream of training
(samplers, evaluation) sees only D with its ``sigma_min`` and ``sigma_max``.
"""

from __future__ import annotations

import torch

from fdm.diffusion.formulations import Formulation


class Denoiser(torch.nn.Module):
    """Wrap a raw network F and a formulation into the denoiser D(x, sigma, class_labels)."""

    def __init__(self, net: torch.nn.Module, formulation: Formulation):
        super().__init__()
        self.net = net
        self.formulation = formulation
        self.img_resolution = net.img_resolution
        self.img_channels = net.img_channels
        self.label_dim = net.label_dim
        self.sigma_min = formulation.sigma_min
        self.sigma_max = formulation.sigma_max

    def forward(self, x, sigma, class_labels=None, augment_labels=None):
        """D(x; sigma) in float32. ``sigma`` is a scalar or one value per image."""
        x = x.to(torch.float32)
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(x.shape[0])
        if sigma.numel() != x.shape[0]:
            raise ValueError(f"sigma has {sigma.numel()} values for a batch of {x.shape[0]} images")
        sigma = sigma.reshape(-1, 1, 1, 1)
        if self.label_dim == 0:
            class_labels = None
        elif class_labels is None:
            class_labels = torch.zeros(x.shape[0], self.label_dim, device=x.device)
        else:
            class_labels = class_labels.to(torch.float32).reshape(-1, self.label_dim)
        c_skip, c_out, c_in, c_noise = self.formulation.scalings(sigma)
        F_x = self.net(c_in * x, c_noise.flatten(), class_labels=class_labels, augment_labels=augment_labels)
        return c_skip * x + c_out * F_x.to(torch.float32)
