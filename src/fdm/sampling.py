"""Deterministic and stochastic samplers for the probability-flow ODE, and their sigma schedules.

The ODE is dx/dsigma = (x - D(x; sigma)) / sigma (EDM, Karras et al. 2022, eq. 1 with s(t) = 1,
sigma(t) = t). Samplers are pure functions ``(denoiser, x, sigmas, *, class_labels, callback, ...) -> x``
over a denoiser ``D(x, sigma, class_labels)``; schedules are separate functions that end in sigma = 0,
so any schedule can drive any solver. Integration runs in float64 whatever the denoiser computes in.
Randomness comes from one ``torch.Generator`` per seed, so an image depends only on its own seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from fdm.names import SAMPLERS, check_sampler, nfe, steps_for_nfe  # noqa: F401 -- re-exported: fdm.sampling.nfe

Callback = Callable[[dict], None]


# Per-seed randomness ------------------------------------------------------------------------------


def seed_generators(seeds: Sequence[int], device: str | torch.device = "cpu") -> list[torch.Generator]:
    """One ``torch.Generator`` per seed, seeded with that seed."""
    return [torch.Generator(device).manual_seed(int(seed)) for seed in seeds]


def randn(
    generators: Sequence[torch.Generator],
    shape: Sequence[int],
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal noise of ``shape`` = [len(generators), ...], row i drawn from generator i.

    Each row is drawn on its generator's device and then moved to ``device`` (default: that of the
    first generator), so CPU generators give the same numbers whatever device the sampler runs on.
    """
    shape = list(shape)
    if not shape or shape[0] != len(generators):
        raise ValueError(f"noise shape {shape} must start with the number of generators ({len(generators)})")
    rows = [torch.randn(shape[1:], generator=g, device=g.device, dtype=dtype) for g in generators]
    return torch.stack(rows).to(device if device is not None else generators[0].device)


# Sigma schedules -----------------------------------------------------------------------------------


def karras_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """The noise levels of Karras et al. (2022), eq. 5: sigma_max to sigma_min evenly in sigma^(1/rho).

    Returns ``num_steps`` decreasing levels followed by a final 0 (float64, length num_steps + 1).
    """
    _check_range(num_steps, sigma_min, sigma_max)
    ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64)
    inv_max, inv_min = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    sigmas = (inv_max + ramp * (inv_min - inv_max)) ** rho
    return _append_zero(sigmas)


def logsnr_sigmas(num_steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Noise levels evenly spaced in lambda = -ln(sigma) (the logSNR of alpha = 1, sigma = t), i.e. geometric.

    Returns ``num_steps`` decreasing levels followed by a final 0 (float64, length num_steps + 1).
    """
    _check_range(num_steps, sigma_min, sigma_max)
    log_sigmas = torch.linspace(math.log(sigma_max), math.log(sigma_min), num_steps, dtype=torch.float64)
    return _append_zero(log_sigmas.exp())


def _check_range(num_steps: int, sigma_min: float, sigma_max: float) -> None:
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


# Samplers ---------------------------------------------------------------------------------------------


def _denoise(denoiser, x: torch.Tensor, sigma: float, class_labels) -> torch.Tensor:
    """D(x; sigma) with one sigma per image, returned in float64."""
    sigma_per_image = torch.full((x.shape[0],), sigma, dtype=torch.float64, device=x.device)
    return denoiser(x, sigma_per_image, class_labels).to(torch.float64)


@torch.no_grad()
def euler(
    denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    class_labels: torch.Tensor | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Euler's method (1st order) on the probability-flow ODE. One evaluation per nonzero sigma."""
    x = x.to(torch.float64)
    sigma_list = sigmas.tolist()
    for i, (sigma, sigma_next) in enumerate(zip(sigma_list[:-1], sigma_list[1:], strict=True)):
        denoised = _denoise(denoiser, x, sigma, class_labels)
        if callback is not None:
            callback(dict(i=i, x=x, sigma=sigma, denoised=denoised))
        # Euler step; the step onto sigma = 0 lands on the denoised image.
        x = x + (sigma_next - sigma) * (x - denoised) / sigma
    return x


@torch.no_grad()
def heun(
    denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    class_labels: torch.Tensor | None = None,
    callback: Callback | None = None,
    generators: Sequence[torch.Generator] | None = None,
    s_churn: float = 0.0,
    s_min: float = 0.0,
    s_max: float = math.inf,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """Heun's 2nd-order method with optional churn, Algorithm 2 of Karras et al. (2022).

    The step onto sigma = 0 is a plain Euler step, so NFE = 2N - 1 for N nonzero sigmas. With
    ``s_churn > 0`` each step whose sigma lies in [s_min, s_max] first raises the noise level by the
    factor 1 + min(s_churn / N, sqrt(2) - 1), drawing the added noise from ``generators`` (one per image).
    """
    x = x.to(torch.float64)
    sigma_list = sigmas.tolist()
    num_steps = len(sigma_list) - 1
    for i, (sigma, sigma_next) in enumerate(zip(sigma_list[:-1], sigma_list[1:], strict=True)):
        # Churn: add noise to move from sigma up to sigma_hat.
        gamma = min(s_churn / num_steps, math.sqrt(2) - 1) if s_min <= sigma <= s_max else 0.0
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:
            if generators is None or len(generators) != x.shape[0]:
                raise ValueError("heun with s_churn > 0 needs one generator per image")
            noise = randn(generators, x.shape, device=x.device, dtype=torch.float64)
            x = x + math.sqrt(sigma_hat**2 - sigma**2) * s_noise * noise
        # Euler step.
        denoised = _denoise(denoiser, x, sigma_hat, class_labels)
        if callback is not None:
            callback(dict(i=i, x=x, sigma=sigma_hat, denoised=denoised))
        d = (x - denoised) / sigma_hat
        x_next = x + (sigma_next - sigma_hat) * d
        # Apply the 2nd order correction, except on the final step to sigma = 0.
        if sigma_next != 0:
            d_next = (x_next - _denoise(denoiser, x_next, sigma_next, class_labels)) / sigma_next
            x_next = x + (sigma_next - sigma_hat) * (d + d_next) / 2
        x = x_next
    return x


def _one_minus_exp(h: float) -> float:
    """1 - e^(-h): the weight of D in one exponential-integrator step over a lambda-interval of length h."""
    return -math.expm1(-h)


@torch.no_grad()
def dpmpp_3s(
    denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    class_labels: torch.Tensor | None = None,
    callback: Callback | None = None,
    orders: Sequence[int] | None = None,
) -> torch.Tensor:
    """DPM-Solver++ singlestep (Lu et al. 2022, data prediction), order up to 3, then a final denoise.

    ``sigmas`` = outer grid sigma_0 > ... > sigma_K > 0, followed by 0. Step k goes from sigma_k to
    sigma_(k+1) with a method of order ``orders[k]`` using that many evaluations (intermediate points at
    r = 1/2, or r = 1/3 and 2/3, of the step in lambda = -ln sigma). The last entry 0 stands for the
    final denoise x = D(x; sigma_K). Default orders: 3 on every step but the last two, which use 2 and 1.
    NFE = sum(orders) + 1. Noise schedule alpha = 1, sigma = t (EDM's linear schedule).
    """
    sigma_list = sigmas.tolist()
    num_outer = len(sigma_list) - 2
    if num_outer < 1 or sigma_list[-1] != 0 or min(sigma_list[:-1]) <= 0:
        raise ValueError("dpmpp_3s needs sigmas = [sigma_0 > ... > sigma_K > 0, 0] with K >= 1")
    if orders is None:
        orders = [3] * (num_outer - 2) + [2, 1] if num_outer >= 2 else [1]
    if len(orders) != num_outer or not set(orders) <= {1, 2, 3}:
        raise ValueError(
            f"dpmpp_3s needs one order in (1, 2, 3) per step: {num_outer} steps, orders {orders}"
        )

    x = x.to(torch.float64)
    for i, order in enumerate(orders):
        sigma, sigma_next = sigma_list[i], sigma_list[i + 1]
        h = math.log(sigma / sigma_next)  # lambda_next - lambda > 0
        denoised = _denoise(denoiser, x, sigma, class_labels)
        if callback is not None:
            callback(dict(i=i, x=x, sigma=sigma, denoised=denoised))
        if order == 1:
            # First order (DDIM): D held constant over the step.
            x = math.exp(-h) * x + _one_minus_exp(h) * denoised
        elif order == 2:
            # Second order, r1 = 1/2: D evaluated at the lambda-midpoint is used over the whole step.
            x_mid = math.exp(-h / 2) * x + _one_minus_exp(h / 2) * denoised
            denoised_mid = _denoise(denoiser, x_mid, sigma * math.exp(-h / 2), class_labels)
            x = math.exp(-h) * x + _one_minus_exp(h) * denoised_mid
        else:
            # Third order, r1 = 1/3, r2 = 2/3: D is linear in lambda with a slope from finite differences.
            # Over an interval of length g, x e^(-g) + (1 - e^(-g)) D + (g - 1 + e^(-g)) dD/dlambda.
            r1, r2 = 1 / 3, 2 / 3
            x_1 = math.exp(-r1 * h) * x + _one_minus_exp(r1 * h) * denoised
            denoised_1 = _denoise(denoiser, x_1, sigma * math.exp(-r1 * h), class_labels)
            slope_1 = (denoised_1 - denoised) / (r1 * h)
            g = r2 * h
            x_2 = math.exp(-g) * x + _one_minus_exp(g) * denoised + (g - _one_minus_exp(g)) * slope_1
            denoised_2 = _denoise(denoiser, x_2, sigma * math.exp(-g), class_labels)
            slope_2 = (denoised_2 - denoised) / (r2 * h)
            x = math.exp(-h) * x + _one_minus_exp(h) * denoised + (h - _one_minus_exp(h)) * slope_2
    # Final denoise at sigma_K.
    denoised = _denoise(denoiser, x, sigma_list[-2], class_labels)
    if callback is not None:
        callback(dict(i=num_outer, x=x, sigma=sigma_list[-2], denoised=denoised))
    return denoised


@torch.no_grad()
def dpmpp_2m(
    denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    class_labels: torch.Tensor | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022): multistep 2nd order in lambda = -ln sigma, data prediction.

    The first step is 1st order (no history yet); the step onto sigma = 0 returns D(x; sigma_(N-1)),
    the limit of every exponential-integrator step there. One evaluation per nonzero sigma.
    """
    x = x.to(torch.float64)
    sigma_list = sigmas.tolist()
    denoised_prev, h_prev = None, None
    for i, (sigma, sigma_next) in enumerate(zip(sigma_list[:-1], sigma_list[1:], strict=True)):
        denoised = _denoise(denoiser, x, sigma, class_labels)
        if callback is not None:
            callback(dict(i=i, x=x, sigma=sigma, denoised=denoised))
        if sigma_next == 0:
            x = denoised
            continue
        h = math.log(sigma / sigma_next)
        if denoised_prev is None:
            estimate = denoised
        else:
            # Linear extrapolation of D in lambda through the previous and current points, to mid-step.
            r = h_prev / h
            estimate = denoised + (denoised - denoised_prev) / (2 * r)
        x = math.exp(-h) * x + _one_minus_exp(h) * estimate
        denoised_prev, h_prev = denoised, h
    return x


_SAMPLER_FUNCTIONS = {"heun": heun, "euler": euler, "dpmpp_3s": dpmpp_3s, "dpmpp_2m": dpmpp_2m}


# NFE accounting ------------------------------------------------------------------------------------------


def dpmpp_3s_orders(num_steps: int) -> list[int]:
    """The DPM-Solver-fast order pattern for ``num_steps - 1`` solver evaluations (the last one denoises).

    With M = num_steps - 1 and K = M // 3 + 1 outer steps: [3]*(K-2) + [2, 1] if M % 3 == 0,
    [3]*(K-1) + [1] if M % 3 == 1, [3]*(K-1) + [2] if M % 3 == 2 (e.g. M = 24 -> [3]*7 + [2, 1]).
    """
    if num_steps < 2:
        raise ValueError(
            f"dpmpp_3s needs at least 2 steps (one solver evaluation plus the final denoise), got {num_steps}"
        )
    solver_nfe = num_steps - 1
    num_outer = solver_nfe // 3 + 1
    tail = {0: [2, 1], 1: [1], 2: [2]}[solver_nfe % 3]
    return [3] * (num_outer - len(tail)) + tail


# Entry point ------------------------------------------------------------------------------------------------


def sample(
    denoiser,
    latents: torch.Tensor,
    sampler: str,
    num_steps: int,
    class_labels: torch.Tensor | None = None,
    generators: Sequence[torch.Generator] | None = None,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    callback: Callback | None = None,
    **sampler_options,
) -> torch.Tensor:
    """Turn latents ~ N(0, I) into float64 images with ``sampler`` in ``num_steps`` steps.

    heun, euler and dpmpp_2m run on ``karras_sigmas`` over [max(sigma_min, D.sigma_min),
    min(sigma_max, D.sigma_max)] (EDM's clamping). dpmpp_3s runs on ``logsnr_sigmas`` with the
    DPM-Solver-fast order pattern and ends at sigma_min unclamped, as FDM's reference does (so VE, whose
    own sigma_min is 0.02, is also sampled down to 0.002). ``generators`` (one per image) feed Heun's
    churn noise; ``sampler_options`` go to the sampler (e.g. s_churn for heun).
    """
    check_sampler(sampler)
    nfe(sampler, num_steps)  # validates num_steps
    sigma_max = min(sigma_max, denoiser.sigma_max)
    if sampler == "dpmpp_3s":
        orders = dpmpp_3s_orders(num_steps)
        sigmas = logsnr_sigmas(len(orders) + 1, sigma_min, sigma_max)
        sampler_options = dict(sampler_options, orders=orders)
    else:
        sigmas = karras_sigmas(num_steps, max(sigma_min, denoiser.sigma_min), sigma_max, rho)
    if sampler == "heun":
        sampler_options = dict(sampler_options, generators=generators)
    x = latents.to(torch.float64) * sigmas[0].item()
    return _SAMPLER_FUNCTIONS[sampler](
        denoiser, x, sigmas, class_labels=class_labels, callback=callback, **sampler_options
    )
