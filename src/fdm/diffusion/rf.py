"""Flow matching on the linear path (rectified flow) as a base formulation, ``rf``: BEYOND THE PAPER.

Flow matching (Lipman et al. 2022, arXiv 2210.02747, its optimal-transport path with sigma_min -> 0) and
rectified flow (Liu et al. 2022, arXiv 2209.03003) join data y and noise n by a straight line,

    x_t = (1 - t) y + t n,    t in [0, 1],

and regress a velocity network v(x_t, t) on n - y with unit weight, t uniform. In EDM's variables
x = x_t / (1 - t) = y + sigma n with sigma = t / (1 - t), t = sigma / (1 + sigma); since y = x_t - t (n - y),
the velocity network is F of D(x; sigma) = c_skip x + c_out F(c_in x; c_noise) with (docs/paper.md
section 8.1)

    c_in = c_skip = 1 / (1 + sigma) = 1 - t,   c_out = -sigma / (1 + sigma) = -t,   c_noise = 999 t,
    lambda(sigma) = ((1 + sigma) / sigma)^2 = 1 / t^2,

so lambda c_out^2 = 1 and lambda |D - y|^2 = |F - (n - y)|^2, the flow-matching loss itself. Training
draws t uniformly (the cited papers' choice) on [t(sigma_min), t(sigma_max)]. The marginals of x are
EDM's, so the project's samplers integrate rf's ODE in sigma unchanged; Euler in sigma on x is Euler in t
on x_t, the flow's own sampler. FDM's time is the flow's t itself, which already runs over [0, 1].
"""

from __future__ import annotations

import dataclasses
import math

import torch

from fdm.diffusion.formulations import Formulation, _as_tensor

NOISE_LABEL = 999  # c_noise = 999 t: VP's (M - 1) t, the range DDPM++'s positional embedding is made for


@dataclasses.dataclass(frozen=True)
class RF(Formulation):
    """Flow matching on x_t = (1 - t) y + t n over sigma = t / (1 - t) in [sigma_min, sigma_max] (EDM's range)."""

    sigma_min: float = 0.002
    sigma_max: float = 80.0

    name = "rf"

    def __post_init__(self):
        if not 0 < self.sigma_min < self.sigma_max < math.inf:
            raise ValueError(
                f"rf needs 0 < sigma_min < sigma_max < inf, got {self.sigma_min}, {self.sigma_max}"
            )

    def t_of_sigma(self, sigma):
        """The flow's time t = sigma / (1 + sigma)."""
        sigma = _as_tensor(sigma)
        return sigma / (1 + sigma)

    def fdm_time(self, sigma):
        """FDM's time: the flow's own t, in [0, 1] like the time of FDM's B(t)."""
        return self.t_of_sigma(sigma)

    def scalings(self, sigma):
        sigma = _as_tensor(sigma)
        c_skip = 1 / (1 + sigma)
        c_out = -sigma / (1 + sigma)
        c_in = 1 / (1 + sigma)
        c_noise = NOISE_LABEL * self.t_of_sigma(sigma)
        return c_skip, c_out, c_in, c_noise

    def loss_weight(self, sigma, step=None):
        sigma = _as_tensor(sigma)
        return ((1 + sigma) / sigma) ** 2

    def sample_sigma(self, n, generator=None):
        t_min, t_max = (float(self.t_of_sigma(s)) for s in (self.sigma_min, self.sigma_max))
        t = t_min + torch.rand(n, generator=generator, dtype=torch.float64) * (t_max - t_min)
        return (t / (1 - t)).float()
