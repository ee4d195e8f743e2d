"""Samplers and schedules, checked against the exact denoiser of a Gaussian mixture (tests/gmm.py)."""

from __future__ import annotations

import math

import pytest
import torch
from gmm import example_mixture, single_gaussian

from fdm import sampling

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second thread only contends


class CountingDenoiser:
    """A real denoiser wrapped to count its calls and remember the last class labels it saw."""

    def __init__(self, denoiser):
        self.denoiser = denoiser
        self.sigma_min, self.sigma_max = denoiser.sigma_min, denoiser.sigma_max
        self.calls = 0
        self.class_labels = None

    def __call__(self, x, sigma, class_labels=None):
        self.calls += 1
        self.class_labels = class_labels
        return self.denoiser(x, sigma, class_labels)


def latents_for(seeds, image_shape):
    return sampling.randn(sampling.seed_generators(seeds), [len(seeds), *image_shape], dtype=torch.float64)


def rms_distance(a, b):
    """Root mean square over images of the per-image L2 distance."""
    return (a - b).flatten(1).norm(dim=1).pow(2).mean().sqrt().item()


# The Gaussian-mixture denoiser itself -----------------------------------------------------------------


def test_gmm_denoiser_satisfies_tweedie():
    """E[x0 | x] = x + sigma^2 grad log p_sigma(x) (Tweedie), with the gradient taken by autograd."""
    gmm = example_mixture()
    x0, _ = gmm.sample(64, torch.Generator().manual_seed(0))
    for sigma in (0.05, 0.7, 3.0, 40.0):
        x = x0 + sigma * torch.randn(
            x0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64
        )
        x.requires_grad_(True)
        (score,) = torch.autograd.grad(gmm.log_density(x, sigma).sum(), x)
        torch.testing.assert_close(
            gmm(x.detach(), sigma), x.detach() + sigma**2 * score, rtol=1e-9, atol=1e-9
        )


def test_gmm_statistics_match_its_samples():
    gmm = example_mixture()
    n = 20000
    x0, components = gmm.sample(n, torch.Generator().manual_seed(0))
    x0 = x0.reshape(n, -1)
    # Four standard errors on each coordinate of the mean; components are recovered by the posterior.
    torch.testing.assert_close(
        x0.mean(0), gmm.mean(), rtol=0, atol=4 * (gmm.covariance().diagonal().max() / n) ** 0.5
    )
    assert torch.equal(gmm.log_posterior(x0, 0.0).argmax(1), components)


# Schedules ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_steps", [1, 2, 18, 40])
def test_karras_sigmas(num_steps):
    sigmas = sampling.karras_sigmas(num_steps, SIGMA_MIN, SIGMA_MAX, rho=7.0)
    assert sigmas.dtype == torch.float64 and sigmas.shape == (num_steps + 1,)
    assert sigmas[0] == SIGMA_MAX and sigmas[-1] == 0
    assert torch.all(sigmas[1:] < sigmas[:-1])
    if num_steps > 1:
        assert math.isclose(sigmas[-2].item(), SIGMA_MIN, rel_tol=1e-12)
        # EDM eq. 5: evenly spaced in sigma^(1/rho).
        spacing = sigmas[:-1].pow(1 / 7).diff()
        torch.testing.assert_close(spacing, spacing[:1].expand_as(spacing), rtol=1e-9, atol=0)


@pytest.mark.parametrize("num_steps", [1, 2, 9, 27])
def test_logsnr_sigmas(num_steps):
    sigmas = sampling.logsnr_sigmas(num_steps, SIGMA_MIN, SIGMA_MAX)
    assert sigmas.dtype == torch.float64 and sigmas.shape == (num_steps + 1,)
    assert sigmas[0] == pytest.approx(SIGMA_MAX, rel=1e-12) and sigmas[-1] == 0
    assert torch.all(sigmas[1:] < sigmas[:-1])
    if num_steps > 1:
        assert math.isclose(sigmas[-2].item(), SIGMA_MIN, rel_tol=1e-12)
        # Uniform in lambda = -ln(sigma).
        spacing = sigmas[:-1].log().diff()
        torch.testing.assert_close(spacing, spacing[:1].expand_as(spacing), rtol=1e-9, atol=0)


@pytest.mark.parametrize("schedule", [sampling.karras_sigmas, sampling.logsnr_sigmas])
def test_schedules_reject_bad_ranges(schedule):
    for args in [(0, SIGMA_MIN, SIGMA_MAX), (10, SIGMA_MAX, SIGMA_MIN), (10, 0.0, SIGMA_MAX)]:
        with pytest.raises(ValueError):
            schedule(*args)


# NFE accounting ----------------------------------------------------------------------------------------------


def test_dpmpp_3s_orders_match_the_reference_patterns():
    """DPM-Solver-fast patterns of the reference: 24/48/78 solver evaluations plus the final denoise."""
    assert sampling.dpmpp_3s_orders(25) == [3] * 7 + [2, 1]
    assert sampling.dpmpp_3s_orders(49) == [3] * 15 + [2, 1]
    assert sampling.dpmpp_3s_orders(79) == [3] * 25 + [2, 1]
    for num_steps in range(2, 100):
        assert sum(sampling.dpmpp_3s_orders(num_steps)) + 1 == num_steps
    with pytest.raises(ValueError, match=r"^dpmpp_3s needs at least 2 steps .*, got 1$"):
        sampling.dpmpp_3s_orders(1)


@pytest.mark.parametrize("sampler", sampling.SAMPLERS)
def test_nfe_and_steps_for_nfe_round_trip(sampler):
    first = 2 if sampler == "dpmpp_3s" else 1
    for num_steps in range(first, 80):
        assert sampling.steps_for_nfe(sampler, sampling.nfe(sampler, num_steps)) == num_steps
    with pytest.raises(ValueError):
        sampling.nfe(sampler, first - 1)


def test_nfe_rules():
    assert [sampling.nfe("heun", n) for n in (13, 18, 25, 40)] == [25, 35, 49, 79]
    assert [sampling.nfe(s, 25) for s in ("euler", "dpmpp_3s", "dpmpp_2m")] == [25, 25, 25]
    for bad in (0, 24, 34, 80):  # Heun's NFE 2N - 1 is odd
        with pytest.raises(ValueError, match="heun"):
            sampling.steps_for_nfe("heun", bad)
    with pytest.raises(ValueError, match="dpmpp_3s"):
        sampling.steps_for_nfe("dpmpp_3s", 1)


def test_unknown_sampler_names_the_valid_ones():
    gmm = single_gaussian()
    for call in (
        lambda: sampling.sample(gmm, torch.zeros(1, 3, 1, 1), "ddim", 10),
        lambda: sampling.nfe("ddim", 10),
        lambda: sampling.steps_for_nfe("ddim", 10),
    ):
        with pytest.raises(ValueError, match="heun, euler, dpmpp_3s, dpmpp_2m"):
            call()


@pytest.mark.parametrize("sampler", sampling.SAMPLERS)
@pytest.mark.parametrize("num_steps", [2, 3, 7, 13])
def test_denoiser_calls_equal_nfe(sampler, num_steps):
    denoiser = CountingDenoiser(example_mixture())
    labels = torch.arange(4)
    options = dict(s_churn=5.0) if sampler == "heun" else {}
    sampling.sample(
        denoiser,
        latents_for(range(4), (1, 2, 2)),
        sampler,
        num_steps,
        class_labels=labels,
        generators=sampling.seed_generators(range(4)),
        **options,
    )
    assert denoiser.calls == sampling.nfe(sampler, num_steps)
    assert denoiser.class_labels is labels


# sample(): schedule, clamping, callback ------------------------------------------------------------------


@pytest.mark.parametrize("sampler", sampling.SAMPLERS)
def test_sample_clamps_to_the_denoiser_and_reports_each_step(sampler):
    """VE-like range [0.02, 100]: heun/euler/dpmpp_2m stop at 0.02, dpmpp_3s (reference) at 0.002."""
    gmm = example_mixture(sigma_min=0.02, sigma_max=100.0)
    latents = latents_for(range(3), (1, 2, 2))
    steps = []
    images = sampling.sample(gmm, latents.float(), sampler, 10, callback=steps.append)
    assert images.dtype == torch.float64 and images.shape == latents.shape
    sigmas = [step["sigma"] for step in steps]
    assert [step["i"] for step in steps] == list(range(len(steps)))
    assert sigmas[0] == pytest.approx(SIGMA_MAX, rel=1e-12)
    assert sigmas[-1] == pytest.approx(SIGMA_MIN if sampler == "dpmpp_3s" else 0.02, rel=1e-12)
    assert all(a > b for a, b in zip(sigmas[:-1], sigmas[1:], strict=False))
    torch.testing.assert_close(steps[0]["x"], latents * SIGMA_MAX, rtol=1e-7, atol=0)
    for step in steps:
        torch.testing.assert_close(step["denoised"], gmm(step["x"], step["sigma"]), rtol=1e-12, atol=1e-12)

    small_range = example_mixture(sigma_max=10.0)
    steps = []
    sampling.sample(small_range, latents, sampler, 10, callback=steps.append)
    assert steps[0]["sigma"] == pytest.approx(10.0, rel=1e-12)


def test_heun_churn_needs_generators():
    gmm = example_mixture()
    with pytest.raises(ValueError, match="generator"):
        sampling.sample(gmm, latents_for(range(2), (1, 2, 2)), "heun", 10, s_churn=5.0)


def test_heun_churn_raises_sigma_inside_its_window():
    """gamma = min(s_churn / N, sqrt(2) - 1) for sigma in [s_min, s_max], else 0 (EDM Algorithm 2)."""
    gmm = example_mixture()
    num_steps, s_min, s_max = 10, 0.1, 20.0
    sigmas = sampling.karras_sigmas(num_steps, SIGMA_MIN, SIGMA_MAX).tolist()
    for s_churn, gamma in [(3.0, 0.3), (100.0, math.sqrt(2) - 1)]:
        steps = []
        sampling.sample(
            gmm,
            latents_for(range(2), (1, 2, 2)),
            "heun",
            num_steps,
            generators=sampling.seed_generators(range(2)),
            callback=steps.append,
            s_churn=s_churn,
            s_min=s_min,
            s_max=s_max,
        )
        expected = [sigma * (1 + gamma) if s_min <= sigma <= s_max else sigma for sigma in sigmas[:-1]]
        assert [step["sigma"] for step in steps] == pytest.approx(expected, rel=1e-12)
        assert any(sigma_hat != sigma for sigma_hat, sigma in zip(expected, sigmas, strict=False))


# Per-seed determinism -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sampler", "options"),
    [
        ("heun", {}),
        ("heun", dict(s_churn=30.0, s_min=0.01, s_max=50.0)),
        ("euler", {}),
        ("dpmpp_3s", {}),
        ("dpmpp_2m", {}),
    ],
)
def test_images_depend_only_on_their_seed(sampler, options):
    gmm = example_mixture()
    seeds = [3, 1, 4, 15, 9, 2]

    def run(batch_seeds):
        latents = sampling.randn(sampling.seed_generators(batch_seeds), [len(batch_seeds), 1, 2, 2])
        generators = sampling.seed_generators([seed + 1000 for seed in batch_seeds])
        return sampling.sample(gmm, latents, sampler, 8, generators=generators, **options)

    together = run(seeds)
    one_by_one = torch.cat([run([seed]) for seed in seeds])
    split = torch.cat([run(seeds[:2]), run(seeds[2:])])
    assert torch.equal(together, one_by_one) and torch.equal(together, split)
    assert not torch.equal(together[0], together[1])
    if options:  # churn really adds noise
        latents = sampling.randn(sampling.seed_generators(seeds), [len(seeds), 1, 2, 2])
        assert not torch.equal(together, sampling.sample(gmm, latents, sampler, 8))


def test_randn_draws_one_row_per_generator():
    rows = sampling.randn(sampling.seed_generators([5, 6]), [2, 3, 4])
    assert torch.equal(rows[1], torch.randn(3, 4, generator=torch.Generator().manual_seed(6)))
    with pytest.raises(ValueError, match="generators"):
        sampling.randn(sampling.seed_generators([5, 6]), [3, 4])


# Accuracy against closed forms ----------------------------------------------------------------------------


def observed_order(errors, nfes):
    return math.log(errors[0] / errors[1]) / math.log(nfes[1] / nfes[0])


@pytest.mark.parametrize(("sampler", "order"), [("euler", 1), ("heun", 2), ("dpmpp_2m", 2)])
def test_convergence_order_on_a_single_gaussian(sampler, order):
    """For N(mu, Sigma) data the ODE has the closed form x(sigma) - mu = sqrt((lam + sigma^2) / (lam + sigma_T^2))
    (x_T - mu) per eigen-direction. Every sampler ends with D(x; sigma_min), so the target is D applied to the
    exact x(sigma_min); the max error must fall like NFE^-order (Karras schedule, rho = 7)."""
    gmm = single_gaussian()
    latents = latents_for(range(64), (3, 1, 1))
    exact = gmm(gmm.ode_solution(latents * SIGMA_MAX, SIGMA_MAX, SIGMA_MIN), SIGMA_MIN)
    nfes = [129, 257]
    errors = [
        (sampling.sample(gmm, latents, sampler, sampling.steps_for_nfe(sampler, n)) - exact)
        .abs()
        .max()
        .item()
        for n in nfes
    ]
    assert abs(observed_order(errors, nfes) - order) < 0.2, errors


@pytest.mark.parametrize("order", [1, 2, 3])
def test_dpmpp_singlestep_order_on_a_single_gaussian(order):
    """DPM-Solver++ singlestep with one fixed order on a logSNR grid: error ~ K^-order for K steps."""
    gmm = single_gaussian()
    x_start = latents_for(range(64), (3, 1, 1)) * SIGMA_MAX
    exact = gmm(gmm.ode_solution(x_start, SIGMA_MAX, SIGMA_MIN), SIGMA_MIN)
    num_outer = [128, 256]
    errors = [
        (
            sampling.dpmpp_3s(
                gmm, x_start, sampling.logsnr_sigmas(k + 1, SIGMA_MIN, SIGMA_MAX), orders=[order] * k
            )
            - exact
        )
        .abs()
        .max()
        .item()
        for k in num_outer
    ]
    assert abs(observed_order(errors, num_outer) - order) < 0.2, errors


def test_dpmpp_3s_beats_the_others_on_a_single_gaussian():
    """The fast order pattern at the paper's NFEs is more accurate than every 2nd-order sampler."""
    gmm = single_gaussian()
    latents = latents_for(range(64), (3, 1, 1))
    exact = gmm(gmm.ode_solution(latents * SIGMA_MAX, SIGMA_MAX, SIGMA_MIN), SIGMA_MIN)
    for n in (25, 49, 79):
        errors = {
            s: (sampling.sample(gmm, latents, s, sampling.steps_for_nfe(s, n)) - exact).abs().max().item()
            for s in sampling.SAMPLERS
        }
        assert errors["dpmpp_3s"] < min(errors["heun"], errors["dpmpp_2m"]) < errors["euler"], errors


def test_error_shrinks_with_nfe_and_faster_for_higher_order_on_a_mixture():
    """Distance of each sample to a very fine integration from the same latent, on the 3-component mixture.

    The reference is DPM-Solver++ at NFE 1201; Heun at NFE 999 must agree with it to 1e-3 (well below
    the errors measured here), which shows both are converged."""
    gmm = example_mixture()
    latents = latents_for(range(128), (1, 2, 2))
    reference = sampling.sample(gmm, latents, "dpmpp_3s", 1201)
    assert rms_distance(sampling.sample(gmm, latents, "heun", 500), reference) < 1e-3
    nfes = (25, 49, 79)
    errors = {
        s: [
            rms_distance(sampling.sample(gmm, latents, s, sampling.steps_for_nfe(s, n)), reference)
            for n in nfes
        ]
        for s in sampling.SAMPLERS
    }
    for sampler, errs in errors.items():
        assert errs[0] > errs[1] > errs[2], (sampler, errs)
    for higher_order in ("heun", "dpmpp_3s", "dpmpp_2m"):
        assert all(h < e for h, e in zip(errors[higher_order], errors["euler"], strict=True)), errors
        # From NFE 25 to 79 the error falls by a larger factor than Euler's.
        assert errors[higher_order][0] / errors[higher_order][2] > errors["euler"][0] / errors["euler"][2], (
            errors
        )


@pytest.mark.parametrize(
    ("sampler", "options"),
    [
        ("heun", {}),
        ("heun", dict(s_churn=40.0, s_min=0.05, s_max=50.0)),
        ("euler", {}),
        ("dpmpp_3s", {}),
        ("dpmpp_2m", {}),
    ],
)
def test_samples_match_the_mixture(sampler, options):
    """N(0, I) latents through ``sample`` at NFE 79 give the mixture's mean, covariance and weights.

    Tolerance: 4 standard errors of each statistic for n = 4000 samples (each estimated from the samples;
    a weight's is sqrt(w (1 - w) / n)). The start N(0, 80^2 I) differs from the true noisy marginal by
    O(|mu| / 80) in the output, well inside these bounds for this mixture."""
    gmm = example_mixture()
    n = 4000
    seeds = range(n)
    images = sampling.sample(
        gmm,
        latents_for(seeds, (1, 2, 2)),
        sampler,
        sampling.steps_for_nfe(sampler, 79),
        generators=sampling.seed_generators([seed + n for seed in seeds]),
        **options,
    )
    x = images.reshape(n, -1)
    mean, covariance = x.mean(0), torch.cov(x.T)
    mean_se = (covariance.diagonal() / n).sqrt()
    centred = x - mean
    covariance_se = (centred[:, :, None] * centred[:, None, :]).std(0) / n**0.5
    weights = torch.bincount(gmm.log_posterior(images, 0.0).argmax(1), minlength=3).double() / n
    weights_se = (gmm.weights * (1 - gmm.weights) / n).sqrt()
    assert torch.all((mean - gmm.mean()).abs() < 4 * mean_se), (mean, gmm.mean())
    assert torch.all((covariance - gmm.covariance()).abs() < 4 * covariance_se), (
        covariance,
        gmm.covariance(),
    )
    assert torch.all((weights - gmm.weights).abs() < 4 * weights_se), weights
