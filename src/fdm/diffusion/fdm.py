"""Fast Diffusion Model (FDM) as a composition over a base formulation.

FDM (Wu et al. 2023, arXiv 2306.06991) replaces the first-order forward process by a critically
damped heavy-ball one. Its mean coefficient is the critically damped solution

    s(sigma) = exp(-m B(t)) (1 + m B(t)),   B(t) = 0.1 t + 9.95 t^2 = beta_min t + beta_d t^2 / 2,

with t = t(sigma) the base's own time map (``fdm_time``): for VP, VE and EDM the authors' linear map
t = (sigma - sigma_min) / (sigma_max - sigma_min) over the base's range (arXiv 2306.06991, section 3;
docs/paper.md section 2). A base without a map has no FDM variant. In the authors' code s(sigma) enters
only through the network input scaling: ``c_in`` is *replaced* by s(sigma); c_skip, c_out, c_noise, the sigma distribution and
lambda(sigma) stay the base's. Training adds a cap on lambda that warms up geometrically from 5 to
500 over ``warmup`` optimizer steps and disappears afterwards (docs/paper.md section 2).

Departure from the reference code: its VE variant ignores the multiplier m; here m is honoured for
every base, and profiles set it explicitly (m = 1 reproduces the reference VE runs).

Beyond the paper, ``cin="scale"`` multiplies the base's c_in by s(sigma) instead of replacing it, so that
the network input keeps the base's normalisation (EDM's unit variance) at every sigma; the default
``"replace"`` is the paper's code. It is an ablation of this project (config/ablation.yaml), not FDM.
"""

from __future__ import annotations

import dataclasses
import math

from fdm import names
from fdm.diffusion.formulations import Formulation

# The VP schedule constants FDM borrows for B(t): B(t) = beta_min t + beta_d t^2 / 2.
FDM_BETA_MIN = 0.1
FDM_BETA_D = 19.9
# Loss-weight cap warmup: from CAP_START, multiplied by (CAP_END / CAP_START)^(1/warmup) per step.
CAP_START = 5.0
CAP_END = 500.0
CIN = ("replace", "scale")  # how s(sigma) enters c_in: the paper's code, or this project's ablation


@dataclasses.dataclass(frozen=True)
class FDM(Formulation):
    """``base`` with c_in replaced by the momentum scaling s(sigma) and a warming-up loss-weight cap."""

    base: Formulation = dataclasses.field(metadata={"option": False})
    multiplier: float = 2.0
    warmup: int = 400
    cin: str = "replace"

    def __post_init__(self):
        if isinstance(self.base, FDM):
            raise ValueError("FDM composes over a base formulation, not over another FDM")
        if self.base.fdm_time is None:
            raise ValueError(
                f"{self.base.name} has no sigma-to-time map (fdm_time), so it has no FDM variant"
            )
        if self.multiplier <= 0:
            raise ValueError(f"FDM multiplier must be positive, got {self.multiplier}")
        if self.warmup < 0:
            raise ValueError(f"FDM warmup must be a non-negative number of steps, got {self.warmup}")
        if self.cin not in CIN:
            raise ValueError(f"FDM cin must be one of {', '.join(CIN)}, got {self.cin!r}")

    @property
    def name(self) -> str:
        return f"{names.FDM}_{self.base.name}"

    @property
    def sigma_min(self) -> float:
        return self.base.sigma_min

    @property
    def sigma_max(self) -> float:
        return self.base.sigma_max

    def fdm_time(self, sigma):
        """FDM's time t(sigma): the base's map."""
        return self.base.fdm_time(sigma)

    def fdm_scale(self, sigma):
        """s(sigma) = exp(-m B) (1 + m B), B = beta_min t + beta_d t^2 / 2 (critically damped mean)."""
        t = self.fdm_time(sigma)
        mB = self.multiplier * (FDM_BETA_MIN * t + 0.5 * FDM_BETA_D * t**2)
        return (-mB).exp() * (1 + mB)

    def scalings(self, sigma):
        c_skip, c_out, c_in, c_noise = self.base.scalings(sigma)
        s = self.fdm_scale(sigma)
        return c_skip, c_out, s if self.cin == "replace" else s * c_in, c_noise

    def weight_cap(self, step: int) -> float:
        """Cap on lambda at optimizer step ``step``: 5 * 100^(step / warmup) while below 500, then none (inf)."""
        if step < 0:
            raise ValueError(f"optimizer step must be non-negative, got {step}")
        if step >= self.warmup:
            return math.inf
        return CAP_START * (CAP_END / CAP_START) ** (step / self.warmup)

    def loss_weight(self, sigma, step=None):
        weight = self.base.loss_weight(sigma)
        if step is None:
            return weight
        cap = self.weight_cap(step)
        return weight if math.isinf(cap) else weight.clamp(max=cap)

    def sample_sigma(self, n, generator=None):
        return self.base.sample_sigma(n, generator)

    def config(self) -> dict:
        """As ``Formulation.config``; ``cin`` is recorded only where it departs from the paper's replace,
        so the snapshots of paper-FDM models are the bytes they always were."""
        config = {
            **self.base.config(),
            "name": self.name,
            "multiplier": self.multiplier,
            "warmup": self.warmup,
        }
        return config if self.cin == "replace" else {**config, "cin": self.cin}
