"""The three baseline formulations of diffusion training: VP, VE and EDM.

Each formulation fixes four things (Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models", Table 1; docs/paper.md section 1):

- the sigma range the network is defined on (``sigma_min``, ``sigma_max``),
- the training distribution of sigma (``sample_sigma``),
- the loss weight lambda(sigma) (``loss_weight``),
- the preconditioning ``c_skip, c_out, c_in, c_noise`` of D(x; sigma) = c_skip x + c_out F(c_in x, c_noise).

In all three lambda(sigma) * c_out(sigma)^2 = 1, so the raw network F is trained with unit weight.
Formulations are immutable value objects: no hidden state, every method a pure function of its inputs.
"""

from __future__ import annotations

import dataclasses

import torch

Tensor = torch.Tensor


def _as_tensor(sigma) -> Tensor:
    return sigma if isinstance(sigma, Tensor) else torch.as_tensor(sigma, dtype=torch.float64)


@dataclasses.dataclass(frozen=True)
class Formulation:
    """Common interface; subclasses are frozen dataclasses whose fields are the hyperparameters."""

    name = "base"

    @property
    def sigma_min(self) -> float:
        raise NotImplementedError

    @property
    def sigma_max(self) -> float:
        raise NotImplementedError

    def scalings(self, sigma) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(c_skip, c_out, c_in, c_noise), each shaped like ``sigma``."""
        raise NotImplementedError

    def loss_weight(self, sigma, step: int | None = None) -> Tensor:
        """lambda(sigma). ``step`` (the optimizer step) only matters for FDM's weight cap."""
        raise NotImplementedError

    def sample_sigma(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` training noise levels (float32, on the CPU)."""
        raise NotImplementedError

    def config(self) -> dict:
        """JSON-able description; ``fdm.diffusion.formulation(**config)`` rebuilds the object."""
        return {"name": self.name, **dataclasses.asdict(self)}


# ----------------------------------------------------------------------------
# Variance preserving (VP): Song et al. 2021, the continuous DDPM; EDM Table 1, column "VP".


@dataclasses.dataclass(frozen=True)
class VP(Formulation):
    """VP-SDE with linear beta(t) = beta_min + beta_d t; sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)."""

    beta_d: float = 19.9
    beta_min: float = 0.1
    M: int = 1000
    epsilon_t: float = 1e-5

    name = "vp"

    def sigma_of_t(self, t) -> Tensor:
        """sigma(t) of the VP SDE (EDM Table 1)."""
        t = _as_tensor(t)
        return (0.5 * self.beta_d * t**2 + self.beta_min * t).exp().sub(1).sqrt()

    def t_of_sigma(self, sigma) -> Tensor:
        """Inverse of ``sigma_of_t``: t = (sqrt(beta_min^2 + 2 beta_d ln(1 + sigma^2)) - beta_min) / beta_d."""
        sigma = _as_tensor(sigma)
        return (
            (self.beta_min**2 + 2 * self.beta_d * sigma.square().log1p()).sqrt() - self.beta_min
        ) / self.beta_d

    @property
    def sigma_min(self) -> float:
        return float(self.sigma_of_t(torch.tensor(self.epsilon_t, dtype=torch.float64)))

    @property
    def sigma_max(self) -> float:
        return float(self.sigma_of_t(torch.tensor(1.0, dtype=torch.float64)))

    def scalings(self, sigma):
        sigma = _as_tensor(sigma)
        c_skip = torch.ones_like(sigma)
        c_out = -sigma
        c_in = 1 / (sigma**2 + 1).sqrt()
        c_noise = (self.M - 1) * self.t_of_sigma(sigma)
        return c_skip, c_out, c_in, c_noise

    def loss_weight(self, sigma, step=None):
        return 1 / _as_tensor(sigma) ** 2

    def sample_sigma(self, n, generator=None):
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        t = 1 + u * (self.epsilon_t - 1)
        return self.sigma_of_t(t).float()


# ----------------------------------------------------------------------------
# Variance exploding (VE): Song et al. 2021, the continuous SMLD; EDM Table 1, column "VE".


@dataclasses.dataclass(frozen=True)
class VE(Formulation):
    """VE-SDE: sigma log-uniform on [sigma_min, sigma_max], c_noise = ln(sigma / 2)."""

    ve_sigma_min: float = 0.02
    ve_sigma_max: float = 100.0

    name = "ve"

    @property
    def sigma_min(self) -> float:
        return self.ve_sigma_min

    @property
    def sigma_max(self) -> float:
        return self.ve_sigma_max

    def scalings(self, sigma):
        sigma = _as_tensor(sigma)
        c_skip = torch.ones_like(sigma)
        c_out = sigma
        c_in = torch.ones_like(sigma)
        c_noise = (0.5 * sigma).log()
        return c_skip, c_out, c_in, c_noise

    def loss_weight(self, sigma, step=None):
        return 1 / _as_tensor(sigma) ** 2

    def sample_sigma(self, n, generator=None):
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        return (self.ve_sigma_min * (self.ve_sigma_max / self.ve_sigma_min) ** u).float()


# ----------------------------------------------------------------------------
# EDM: Karras et al. 2022, Table 1, column "Ours".


@dataclasses.dataclass(frozen=True)
class EDM(Formulation):
    """EDM preconditioning; ln sigma ~ N(P_mean, P_std^2) in training.

    EDM's own network wrapper declares the range (0, inf); every consumer (the sampler's clamp
    to [0.002, 80], FDM's time normalisation) uses [0.002, 80], so that is the range stated here.
    """

    sigma_data: float = 0.5
    P_mean: float = -1.2
    P_std: float = 1.2
    edm_sigma_min: float = 0.002
    edm_sigma_max: float = 80.0

    name = "edm"

    @property
    def sigma_min(self) -> float:
        return self.edm_sigma_min

    @property
    def sigma_max(self) -> float:
        return self.edm_sigma_max

    def scalings(self, sigma):
        sigma = _as_tensor(sigma)
        sd = self.sigma_data
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
        c_in = 1 / (sigma**2 + sd**2).sqrt()
        c_noise = sigma.log() / 4
        return c_skip, c_out, c_in, c_noise

    def loss_weight(self, sigma, step=None):
        sigma = _as_tensor(sigma)
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2

    def sample_sigma(self, n, generator=None):
        ln_sigma = torch.randn(n, generator=generator, dtype=torch.float64) * self.P_std + self.P_mean
        return ln_sigma.exp().float()


BASES: dict[str, type[Formulation]] = {"vp": VP, "ve": VE, "edm": EDM}

__all__ = ["BASES", "EDM", "VE", "VP", "Formulation"]
