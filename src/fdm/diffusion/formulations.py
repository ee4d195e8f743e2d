"""The formulation interface, the registry of base formulations, and the paper's three bases: VP, VE, EDM.

Each formulation fixes four things (Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models", Table 1; docs/paper.md section 1):

- the sigma range the network is defined on (``sigma_min``, ``sigma_max``),
- the training distribution of sigma (``sample_sigma``),
- the loss weight lambda(sigma) (``loss_weight``),
- the preconditioning ``c_skip, c_out, c_in, c_noise`` of D(x; sigma) = c_skip x + c_out F(c_in x, c_noise).

A base formulation also says how FDM's time t runs with sigma (``fdm_time``; arXiv 2306.06991,
section 3), which its FDM variant needs. In all of them lambda(sigma) * c_out(sigma)^2 = 1, so the raw
network F is trained with unit weight. Formulations are immutable value objects: no hidden state,
every method a pure function of its inputs, every hyperparameter a dataclass field (``options``).

A base registers itself by defining ``name`` in its class body (``class VP(Formulation): name = "vp"``);
``fdm.diffusion`` imports every module of the package and checks the registry against
``fdm.names.BASES``. A subclass that does not define its own ``name`` (a variant of a base made for a
test) is not registered.
"""

from __future__ import annotations

import dataclasses

import torch

Tensor = torch.Tensor

REGISTRY: dict[str, type[Formulation]] = {}
"""Base formulation classes by name, filled as their classes are defined."""


def _as_tensor(sigma) -> Tensor:
    return sigma if isinstance(sigma, Tensor) else torch.as_tensor(sigma, dtype=torch.float64)


def linear_time(sigma, sigma_min: float, sigma_max: float) -> Tensor:
    """t = (sigma - sigma_min) / (sigma_max - sigma_min): FDM's time as the authors' code computes it for
    VP, VE and EDM, linear in sigma over the base's own range (arXiv 2306.06991, section 3)."""
    return (_as_tensor(sigma) - sigma_min) / (sigma_max - sigma_min)


@dataclasses.dataclass(frozen=True)
class Formulation:
    """Common interface; subclasses are frozen dataclasses whose fields are the hyperparameters.

    A subclass provides ``sigma_min`` and ``sigma_max`` (fields or properties), the four methods
    below, and, to have an FDM variant, ``fdm_time``.
    """

    name = "base"

    fdm_time = None
    """FDM's time t in [0, 1] as a function of sigma (a method), or None: no FDM variant."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if not isinstance(name, str):
            return
        if name in REGISTRY:
            raise TypeError(
                f"formulation {name!r} is defined twice: {REGISTRY[name].__qualname__}, {cls.__qualname__}"
            )
        REGISTRY[name] = cls

    @classmethod
    def options(cls) -> dict:
        """The hyperparameters a profile may set (``formulation_options``): each field and its default."""
        return {f.name: f.default for f in dataclasses.fields(cls) if f.metadata.get("option", True)}

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

    def fdm_time(self, sigma):
        """FDM's time: linear in sigma over [sigma_min, sigma_max], as the authors' FDM_VPPrecond."""
        return linear_time(sigma, self.sigma_min, self.sigma_max)

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

    def fdm_time(self, sigma):
        """FDM's time: linear in sigma over [sigma_min, sigma_max], as the authors' FDM_VEPrecond."""
        return linear_time(sigma, self.sigma_min, self.sigma_max)

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

    def fdm_time(self, sigma):
        """FDM's time: linear in sigma over [sigma_min, sigma_max], as the authors' FDM_EDMPrecond."""
        return linear_time(sigma, self.sigma_min, self.sigma_max)

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


__all__ = ["EDM", "REGISTRY", "VE", "VP", "Formulation", "linear_time"]
