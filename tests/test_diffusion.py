"""Formulations and the denoiser against oracles written from each formulation's own paper.

An oracle states a base formulation as its paper trains it, with x = y + sigma n (EDM's variables, y the
data, n ~ N(0, I)): the network's input c_in x, its noise label, its regression target p y + q n, the
training distribution of sigma and FDM's time map. From these alone follow c_skip and c_out (D = y where
F hits the target) and lambda (the target's loss has unit weight); on Gaussian data the network that
outputs the target's conditional mean must give the optimal denoiser E[y | x] in closed form. The tests
run over every formulation in ``fdm.names``; a base without an oracle fails them.
"""

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from fdm import names
from fdm.diffusion import REGISTRY, Denoiser, Formulation, check_registry, formulation, options

SIGMAS = np.geomspace(0.002, 80.0, 41)
FDM_VARIANTS = tuple(names.BASELINE)


def vp_sigma(t, beta_d=19.9, beta_min=0.1):
    return np.sqrt(np.exp(0.5 * beta_d * t**2 + beta_min * t) - 1)


def vp_t(sigma, beta_d=19.9, beta_min=0.1):
    return (np.sqrt(beta_min**2 + 2 * beta_d * np.log(1 + sigma**2)) - beta_min) / beta_d


def normal_cdf(z):
    return 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))


@dataclasses.dataclass(frozen=True)
class Oracle:
    """A base formulation with its default options, as its paper writes it (functions of sigma, numpy)."""

    sigma_min: float
    sigma_max: float
    c_in: Callable  # the network sees c_in(sigma) x
    c_noise: Callable
    target: Callable  # sigma -> (p, q): the network is trained towards p y + q n with unit weight
    uniform: Callable  # sampled sigma -> values uniform on [0, 1] under the training distribution
    draws: Callable  # (generator, n) -> those uniform values, from the generator's float64 stream
    fdm_time: Callable | None  # FDM's time t(sigma), None: no FDM variant


def rand64(generator, n):
    return torch.rand(n, generator=generator, dtype=torch.float64).numpy()


def linear_time(lo, hi):
    return lambda sigma: (sigma - lo) / (hi - lo)


VP_RANGE = (vp_sigma(1e-5), vp_sigma(1.0))
EDM_SD = 0.5

ORACLES = {
    # Song et al. 2021 (DDPM's epsilon-prediction), EDM Table 1 "VP": the network sees x_t = x / sqrt(1 +
    # sigma^2), is labelled 999 t(sigma) and predicts the noise n; t ~ U(1e-5, 1).
    "vp": Oracle(
        *VP_RANGE,
        c_in=lambda sigma: 1 / np.sqrt(1 + sigma**2),
        c_noise=lambda sigma: 999 * vp_t(sigma),
        target=lambda sigma: (0.0, 1.0),
        uniform=lambda sigma: (vp_t(sigma) - 1e-5) / (1 - 1e-5),
        draws=lambda g, n: 1 - rand64(g, n),  # t = 1 + u (epsilon_t - 1), as EDM's VP loss writes it
        fdm_time=linear_time(*VP_RANGE),
    ),
    # Song et al. 2021 (NCSN's sigma-scaled score, -n), EDM Table 1 "VE": the network sees x, is labelled
    # ln(sigma / 2); ln sigma ~ U(ln 0.02, ln 100).
    "ve": Oracle(
        0.02,
        100.0,
        c_in=lambda sigma: np.ones_like(sigma),
        c_noise=lambda sigma: np.log(sigma / 2),
        target=lambda sigma: (0.0, -1.0),
        uniform=lambda sigma: np.log(sigma / 0.02) / np.log(100 / 0.02),
        draws=rand64,
        fdm_time=linear_time(0.02, 100.0),
    ),
    # EDM (Karras et al. 2022) eq. 8 and Table 1: the input has unit variance, the label is ln(sigma) / 4,
    # the target (y - c_skip x) / c_out written out; ln sigma ~ N(-1.2, 1.2^2).
    "edm": Oracle(
        0.002,
        80.0,
        c_in=lambda sigma: 1 / np.sqrt(sigma**2 + EDM_SD**2),
        c_noise=lambda sigma: np.log(sigma) / 4,
        target=lambda sigma: (
            sigma / (EDM_SD * np.sqrt(sigma**2 + EDM_SD**2)),
            -EDM_SD / np.sqrt(sigma**2 + EDM_SD**2),
        ),
        uniform=lambda sigma: normal_cdf((np.log(sigma) + 1.2) / 1.2),
        draws=lambda g, n: normal_cdf(torch.randn(n, generator=g, dtype=torch.float64).numpy()),
        fdm_time=linear_time(0.002, 80.0),
    ),
    # Flow matching / rectified flow (Lipman et al. 2022, Liu et al. 2022), beyond the paper: the network
    # sees x_t = (1 - t) y + t n with t = sigma / (1 + sigma), is labelled 999 t and predicts the velocity
    # n - y; t ~ U(t(0.002), t(80)); FDM's time is t.
    "rf": Oracle(
        0.002,
        80.0,
        c_in=lambda sigma: 1 - sigma / (1 + sigma),
        c_noise=lambda sigma: 999 * sigma / (1 + sigma),
        target=lambda sigma: (-1.0, 1.0),
        uniform=lambda sigma: (sigma / (1 + sigma) - 0.002 / 1.002) / (80 / 81 - 0.002 / 1.002),
        draws=rand64,
        fdm_time=lambda sigma: sigma / (1 + sigma),
    ),
}


def oracle(name: str) -> Oracle:
    base = names.base_of(name)
    assert base in ORACLES, f"no oracle for the base formulation {base!r}: add one to ORACLES"
    return ORACLES[base]


def s_fdm(t, m=2.0):
    """FDM's critically damped mean coefficient at time t (arXiv 2306.06991, section 3)."""
    B = m * (0.1 * t + 9.95 * t**2)
    return np.exp(-B) * (1 + B)


def expected(name, sigma, m=2.0):
    """(c_skip, c_out, c_in, c_noise, lambda) from the oracle: D = y when F = p y + q n for every (y, n)
    gives c_skip + c_out p = 1 and c_skip sigma + c_out q = 0; unit weight on F gives lambda c_out^2 = 1."""
    o = oracle(name)
    p, q = o.target(sigma)
    c_out = sigma / (p * sigma - q)
    c_skip = -q / (p * sigma - q)
    c_in = o.c_in(sigma) if name in names.BASES else s_fdm(o.fdm_time(sigma), m)
    return c_skip, c_out, c_in, o.c_noise(sigma), 1 / c_out**2


@pytest.mark.parametrize("name", names.FORMULATIONS)
def test_coefficients_match_the_oracle(name):
    f = formulation(name)
    sigma = torch.tensor(SIGMAS, dtype=torch.float64)
    got = [*f.scalings(sigma), f.loss_weight(sigma)]
    for g, want, label in zip(
        got, expected(name, SIGMAS), ["c_skip", "c_out", "c_in", "c_noise", "lambda"], strict=True
    ):
        np.testing.assert_allclose(g.numpy(), want, rtol=1e-10, atol=1e-12, err_msg=f"{name} {label}")
    o = oracle(name)
    assert (f.sigma_min, f.sigma_max) == (pytest.approx(o.sigma_min, rel=1e-12), pytest.approx(o.sigma_max))


@pytest.mark.parametrize("name", names.FORMULATIONS)
def test_the_loss_is_the_papers_regression_on_the_network(name):
    """lambda(sigma) |D(x) - y|^2 = |F - (p y + q n)|^2 for any network output F: the formulation trains its
    network exactly as the oracle's paper does."""
    f = formulation(name)
    g = torch.Generator().manual_seed(0)
    y, n, F = (torch.randn(len(SIGMAS), generator=g, dtype=torch.float64) for _ in range(3))
    sigma = torch.tensor(SIGMAS, dtype=torch.float64)
    c_skip, c_out, _, _ = f.scalings(sigma)
    loss = f.loss_weight(sigma) * (c_skip * (y + sigma * n) + c_out * F - y) ** 2
    p, q = oracle(name).target(SIGMAS)
    np.testing.assert_allclose(loss.numpy(), (F.numpy() - (p * y.numpy() + q * n.numpy())) ** 2, rtol=1e-9)


@pytest.mark.parametrize("name", names.FORMULATIONS)
def test_the_optimal_network_gives_the_optimal_denoiser_on_gaussian_data(name):
    """y ~ N(mu, s^2): E[y | x] = mu + s^2 / (s^2 + sigma^2) (x - mu). The oracle's optimal network is the
    conditional mean of its target given its own input u = c x, E[p y + q n | u] = p mu + (p s^2 +
    q sigma) / (c (s^2 + sigma^2)) (u - c mu); given what the formulation feeds it (c_in x, c_noise), the
    formulation's D must be E[y | x]."""
    f, o = formulation(name), oracle(name)
    mu, s = 0.3, 0.7
    for value in SIGMAS[::4]:
        sigma = torch.tensor([value], dtype=torch.float64)
        c_skip, c_out, c_in, c_noise = f.scalings(sigma)
        np.testing.assert_allclose(c_noise.numpy(), o.c_noise(value), rtol=1e-9)  # the label it is given
        c = o.c_in(value) if name in names.BASES else s_fdm(o.fdm_time(value))
        p, q = o.target(value)
        x = torch.linspace(-3, 3, 13, dtype=torch.float64) * math.sqrt(s**2 + value**2) + mu
        u = c_in * x
        F = p * mu + (p * s**2 + q * value) / (c * (s**2 + value**2)) * (u - c * mu)
        D = c_skip * x + c_out * F
        torch.testing.assert_close(D, mu + s**2 / (s**2 + value**2) * (x - mu), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("base", names.BASES)
def test_training_sigma_distribution(base):
    """The oracle's map of the drawn sigmas is uniform on [0, 1]: range, mean 1/2, variance 1/12."""
    n = 200_000
    sigma = formulation(base).sample_sigma(n, torch.Generator().manual_seed(0))
    assert sigma.dtype == torch.float32 and sigma.shape == (n,)
    u = oracle(base).uniform(sigma.double().numpy())
    assert u.min() >= -1e-6 and u.max() <= 1 + 1e-6
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002


@pytest.mark.parametrize("base", names.BASES)
def test_training_sigmas_are_the_float64_uniform_stream(base):
    """Each drawn sigma is the oracle's image of one float64 draw of the generator's stream, in order (the
    draws a base and its FDM variant share with a seed, docs/training.md), not of a float32 stream."""
    n = 4096
    sigma = formulation(base).sample_sigma(n, torch.Generator().manual_seed(7))
    u = oracle(base).draws(torch.Generator().manual_seed(7), n)
    assert np.abs(oracle(base).uniform(sigma.double().numpy()) - u).max() < 1e-5


@pytest.mark.parametrize("lo, hi", [(0.0, 80.0), (1.0, 1.0), (2.0, 1.0), (0.002, math.inf)])
def test_rf_needs_a_finite_ordered_positive_range(lo, hi):
    with pytest.raises(ValueError, match=rf"^rf needs 0 < sigma_min < sigma_max < inf, got {lo}, {hi}$"):
        formulation("rf", sigma_min=lo, sigma_max=hi)


def test_a_named_subclass_registers_itself_once():
    @dataclasses.dataclass(frozen=True)
    class Probe(REGISTRY["edm"]):
        name = "probe"

    try:
        assert REGISTRY["probe"] is Probe
        with pytest.raises(TypeError, match=r"^formulation 'probe' is defined twice: .*Probe, .*Again$"):

            class Again(REGISTRY["edm"]):
                name = "probe"

        assert REGISTRY["probe"] is Probe
    finally:
        REGISTRY.pop("probe", None)


def test_the_registry_is_the_list_of_names():
    assert list(REGISTRY) == list(names.BASES)
    for name, cls in REGISTRY.items():
        assert cls.name == name and issubclass(cls, Formulation)
    assert names.FORMULATIONS == names.BASES + tuple(f"fdm_{b}" for b in names.BASES)
    assert names.BASELINE == {f"fdm_{b}": b for b in names.BASES}
    with pytest.raises(ImportError, match=r"differ from fdm.names.BASES; no class for xyz$"):
        check_registry(REGISTRY, (*names.BASES, "xyz"))
    with pytest.raises(ImportError, match=r"; not in BASES: edm$"):
        check_registry(REGISTRY, tuple(b for b in names.BASES if b != "edm"))

    @dataclasses.dataclass(frozen=True)
    class Clash(Formulation):
        warmup: int = 3

    with pytest.raises(ImportError, match="clash's option.s. warmup are also FDM's"):
        check_registry({"clash": Clash}, ("clash",))


def test_a_subclass_without_its_own_name_is_not_registered():
    @dataclasses.dataclass(frozen=True)
    class Float32EDM(REGISTRY["edm"]):
        pass

    assert REGISTRY["edm"] is not Float32EDM and Float32EDM.name == "edm"


def test_a_base_without_a_time_map_has_no_fdm_variant():
    from fdm.diffusion import FDM

    @dataclasses.dataclass(frozen=True)
    class Timeless(REGISTRY["ve"]):
        fdm_time = None

    with pytest.raises(
        ValueError, match="^ve has no sigma-to-time map .fdm_time., so it has no FDM variant$"
    ):
        FDM(Timeless())


@pytest.mark.parametrize("name", names.FORMULATIONS)
def test_every_option_can_be_set(name):
    """Each option (a dataclass field of the base, and of FDM for a variant) set to another valid value is
    held by the formulation and recorded in its config, which rebuilds it."""
    defaults = options(name)
    assert defaults and "base" not in defaults
    for key, default in defaults.items():
        value = "scale" if key == "cin" else default + 1 if isinstance(default, int) else default * 1.25
        f = formulation(name, **{key: value})
        assert f.config()[key] == value != default, (name, key)
        assert formulation(**f.config()) == f


def test_unknown_names_and_options_are_one_line_naming_the_valid_ones():
    with pytest.raises(
        ValueError, match=f"^unknown formulation 'ddpm'; expected one of {', '.join(names.FORMULATIONS)}$"
    ):
        formulation("ddpm")
    with pytest.raises(
        ValueError, match="^unknown option.s. multiplier for formulation 'edm'; valid: P_mean, P_std,"
    ):
        formulation("edm", multiplier=2.0)
    with pytest.raises(
        ValueError, match="^unknown option.s. P_meen for formulation 'fdm_edm'; valid: .*cin.*warmup$"
    ):
        formulation("fdm_edm", P_meen=-1.0)
    with pytest.raises(ValueError, match="positive"):
        formulation("fdm_edm", multiplier=0)


@pytest.mark.parametrize("base", names.BASES)
def test_fdm_keeps_everything_but_c_in(base):
    plain, fdm = formulation(base), formulation(f"fdm_{base}")
    sigma = torch.tensor(SIGMAS, dtype=torch.float64)
    for i in (0, 1, 3):
        torch.testing.assert_close(fdm.scalings(sigma)[i], plain.scalings(sigma)[i])
    torch.testing.assert_close(fdm.loss_weight(sigma), plain.loss_weight(sigma))
    assert (fdm.sigma_min, fdm.sigma_max) == (plain.sigma_min, plain.sigma_max)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    torch.testing.assert_close(fdm.sample_sigma(100, g1), plain.sample_sigma(100, g2))


@pytest.mark.parametrize("base", names.BASES)
def test_unit_effective_weight(base):
    """lambda(sigma) c_out(sigma)^2 = 1: the raw network is trained with unit weight."""
    f = formulation(base)
    sigma = torch.tensor(SIGMAS, dtype=torch.float64)
    torch.testing.assert_close(f.loss_weight(sigma) * f.scalings(sigma)[1] ** 2, torch.ones_like(sigma))


def test_edm_limits_at_small_sigma():
    c_skip, c_out, _, _ = formulation("edm").scalings(torch.tensor([1e-8], dtype=torch.float64))
    assert abs(c_skip.item() - 1) < 1e-12
    assert abs(c_out.item()) < 1e-7


def test_ranges():
    assert formulation("ve").sigma_min == 0.02 and formulation("ve").sigma_max == 100
    assert formulation("edm").sigma_min == 0.002 and formulation("edm").sigma_max == 80
    vp = formulation("vp")
    assert vp.sigma_min == pytest.approx(0.0010005, abs=1e-7)
    assert vp.sigma_max == pytest.approx(152.167, abs=1e-3)


def test_fdm_scale_values_edm_m2():
    """With m = 2 over EDM's range, s(10) = 0.955, s(20) = 0.629, s(40) = 0.038 (docs/paper.md section 2)."""
    f = formulation("fdm_edm", multiplier=2.0)
    got = f.fdm_scale(torch.tensor([10.0, 20.0, 40.0], dtype=torch.float64)).numpy()
    np.testing.assert_array_equal(np.round(got, 3), [0.955, 0.629, 0.038])
    assert f.fdm_scale(torch.tensor(80.0, dtype=torch.float64)).item() == pytest.approx(3.9e-8, rel=0.05)


@pytest.mark.parametrize("name", FDM_VARIANTS)
@pytest.mark.parametrize("m", [1.0, 2.0])
def test_fdm_scale_falls_from_one_to_zero_over_the_range(name, m):
    f = formulation(name, multiplier=m)
    sigma = torch.linspace(f.sigma_min, f.sigma_max, 2001, dtype=torch.float64)
    s = f.fdm_scale(sigma)
    np.testing.assert_allclose(
        s.numpy(), s_fdm(oracle(name).fdm_time(sigma.numpy()), m), rtol=1e-12, atol=1e-300
    )
    assert s[0].item() == pytest.approx(1.0, abs=1e-6)
    assert torch.all(s[1:] < s[:-1])
    assert s[-1].item() < 1e-3


def test_multiplier_honoured_for_ve():
    """The reference ignores m for VE; here every base honours it."""
    sigma = torch.tensor([30.0], dtype=torch.float64)
    t = oracle("ve").fdm_time(30.0)
    np.testing.assert_allclose(formulation("fdm_ve", multiplier=1.0).fdm_scale(sigma).numpy(), s_fdm(t, 1.0))
    np.testing.assert_allclose(formulation("fdm_ve", multiplier=2.0).fdm_scale(sigma).numpy(), s_fdm(t, 2.0))


@pytest.mark.parametrize("base", names.BASES)
def test_fdm_cin_scale_multiplies_the_base_input_scaling(base):
    """The ablation beyond the paper: c_in = s(sigma) c_in,base; so the EDM network's input keeps unit
    variance where s = 1, and the rest of the formulation is the paper's."""
    plain, replace = formulation(base), formulation(f"fdm_{base}")
    scale = formulation(f"fdm_{base}", cin="scale")
    sigma = torch.tensor(SIGMAS, dtype=torch.float64)
    torch.testing.assert_close(scale.scalings(sigma)[2], replace.fdm_scale(sigma) * plain.scalings(sigma)[2])
    for i in (0, 1, 3):
        torch.testing.assert_close(scale.scalings(sigma)[i], replace.scalings(sigma)[i])
    if base == "edm":  # input std sqrt(sigma^2 + sd^2) c_in = 1 at low sigma, times s(sigma) <= 1 above it
        std = (sigma**2 + 0.25).sqrt() * scale.scalings(sigma)[2]
        assert torch.all(std <= 1 + 1e-12) and abs(std[0].item() - 1) < 1e-6
    assert formulation(**scale.config()) == scale and scale.config()["cin"] == "scale"
    assert "cin" not in replace.config()  # the paper's models record what they always did
    with pytest.raises(ValueError, match="cin must be one of replace, scale"):
        formulation(f"fdm_{base}", cin="multiply")


def test_vp_sigma_round_trip():
    vp = formulation("vp")
    t = torch.linspace(1e-5, 1, 1001, dtype=torch.float64)
    torch.testing.assert_close(vp.t_of_sigma(vp.sigma_of_t(t)), t, rtol=1e-9, atol=1e-12)
    sigma = torch.tensor(SIGMAS, dtype=torch.float64)
    torch.testing.assert_close(vp.sigma_of_t(vp.t_of_sigma(sigma)), sigma, rtol=1e-9, atol=0)


def test_weight_cap_schedule():
    f = formulation("fdm_edm", warmup=200)
    assert f.weight_cap(0) == 5.0
    assert f.weight_cap(100) == pytest.approx(50.0)
    ratios = [f.weight_cap(k + 1) / f.weight_cap(k) for k in range(199)]
    np.testing.assert_allclose(ratios, 100 ** (1 / 200), rtol=1e-12)
    assert f.weight_cap(199) < 500
    assert math.isinf(f.weight_cap(200)) and math.isinf(f.weight_cap(10**6))
    with pytest.raises(ValueError, match="^optimizer step must be non-negative, got -1$"):
        f.weight_cap(-1)
    # The cap is applied only while it is below 500, then lambda is uncapped (not held at 500).
    sigma = torch.tensor([0.01, 0.1, 1.0, 10.0], dtype=torch.float64)
    raw = f.loss_weight(sigma)
    torch.testing.assert_close(f.loss_weight(sigma, step=0), raw.clamp(max=5.0))
    torch.testing.assert_close(f.loss_weight(sigma, step=200), raw)
    assert raw[0] > 500  # so the last check above really shows "no cap" rather than "cap 500"
    assert math.isinf(formulation("fdm_vp", warmup=0).weight_cap(0))


@pytest.mark.parametrize("base", names.BASES)
def test_baselines_ignore_step(base):
    f = formulation(base)
    sigma = torch.tensor([0.01, 1.0], dtype=torch.float64)
    torch.testing.assert_close(f.loss_weight(sigma, step=0), f.loss_weight(sigma))


def test_config_round_trip():
    for name in names.FORMULATIONS:
        f = formulation(name)
        assert formulation(**f.config()) == f and f.config()["name"] == name
    assert formulation("fdm_edm", multiplier=1.0, warmup=800).config()["warmup"] == 800


class RecordingNet(torch.nn.Module):
    """F(x, c_noise) = 3 x + c_noise, remembering what it was given."""

    img_resolution, img_channels, label_dim = 4, 1, 0

    def forward(self, x, noise_labels, class_labels=None, augment_labels=None):
        self.seen = (x.clone(), noise_labels.clone())
        return 3 * x + noise_labels.reshape(-1, 1, 1, 1)


@pytest.mark.parametrize("name", names.FORMULATIONS)
def test_denoiser_combines_scalings(name):
    f = formulation(name)
    D = Denoiser(RecordingNet(), f)
    x = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.01, 0.3, 1.0, 7.0, 60.0])
    out = D(x, sigma)
    c_skip, c_out, c_in, c_noise = (c.reshape(-1, 1, 1, 1) for c in f.scalings(sigma.reshape(-1, 1, 1, 1)))
    torch.testing.assert_close(D.net.seen[0], c_in * x)
    torch.testing.assert_close(D.net.seen[1], c_noise.flatten())
    torch.testing.assert_close(out, c_skip * x + c_out * (3 * c_in * x + c_noise))
    assert out.dtype == torch.float32
    # A scalar sigma applies to the whole batch.
    torch.testing.assert_close(D(x, 1.0), D(x, torch.ones(5)))
    assert (D.sigma_min, D.sigma_max) == (f.sigma_min, f.sigma_max)
    with pytest.raises(ValueError, match="sigma has 2 values"):
        D(x, torch.ones(2))


def test_rf_samples_with_the_flows_own_euler_steps():
    """The project's Euler sampler, integrating in sigma on x = x_t / (1 - t) with rf's denoiser, takes
    exactly the flow-matching Euler steps x_t' = x_t + (t' - t) v(x_t, t) in t, here with the optimal
    velocity of Gaussian data y ~ N(mu, s^2): v = E[n - y | x_t], in closed form from the joint Gaussian."""
    from fdm import sampling

    mu, s = 0.3, 0.7
    rf = formulation("rf")

    def velocity(x_t, t):  # E[n - y | x_t] for x_t = (1 - t) y + t n
        var = (1 - t) ** 2 * s**2 + t**2
        return -mu + (t - (1 - t) * s**2) / var * (x_t - (1 - t) * mu)

    def denoiser(x, sigma, class_labels=None):  # rf's D with the optimal network F = v(c_in x, c_noise / 999)
        c_skip, c_out, c_in, c_noise = (c.reshape(-1, 1) for c in rf.scalings(sigma))
        return c_skip * x + c_out * velocity(c_in * x, c_noise / 999)

    sigmas = sampling.karras_sigmas(12, rf.sigma_min, rf.sigma_max)  # ending in 0: t = 0, the data
    noise = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = sampling.euler(denoiser, noise * sigmas[0], sigmas)
    t = sigmas / (1 + sigmas)
    x_t = (1 - t[0]) * noise * sigmas[0]
    for t_now, t_next in zip(t[:-1], t[1:], strict=True):
        x_t = x_t + (t_next - t_now) * velocity(x_t, t_now)
    torch.testing.assert_close(ours, x_t, rtol=1e-12, atol=1e-12)


def test_registry_and_option_errors_name_every_offender_comma_separated():
    """Each refusal is one line that lists all the offending names, ", "-separated, and only the clauses
    that apply: missing classes, classes not in BASES, options shared with FDM, unknown options."""
    prefix = "^fdm.diffusion: the registered base formulations differ from fdm.names.BASES"
    with pytest.raises(ImportError, match=f"{prefix}; no class for xyz, abc$"):
        check_registry(REGISTRY, (*names.BASES, "xyz", "abc"))
    with pytest.raises(ImportError, match=f"{prefix}; not in BASES: ve, edm$"):
        check_registry(REGISTRY, tuple(b for b in names.BASES if b not in ("ve", "edm")))

    @dataclasses.dataclass(frozen=True)
    class Clash(Formulation):
        multiplier: float = 1.0
        warmup: int = 3

    with pytest.raises(
        ImportError, match="^fdm.diffusion: clash's option.s. multiplier, warmup are also FDM's$"
    ):
        check_registry({"clash": Clash}, ("clash",))
    with pytest.raises(
        ValueError, match="^unknown option.s. P_meen, warmap for formulation 'fdm_edm'; valid: "
    ):
        formulation("fdm_edm", P_meen=-1.0, warmap=3)


def test_parse_options_splits_at_the_first_equals_and_reads_the_defaults_type(monkeypatch):
    """``KEY=VALUE``: the key ends at the first "=", the value is read as the type of the option's default;
    a bool option (none is registered today) takes true or false in any case and nothing else."""
    import fdm.diffusion

    assert fdm.diffusion.parse_options("fdm_edm", ["multiplier=1.5", "warmup=8", "cin=a=b"]) == {
        "multiplier": 1.5,
        "warmup": 8,
        "cin": "a=b",
    }
    monkeypatch.setattr(fdm.diffusion, "options", lambda name: {"flag": False, "multiplier": 2.0})
    for text, value in (("true", True), ("false", False), ("True", True), ("FALSE", False)):
        assert fdm.diffusion.parse_options("probe", [f"flag={text}"]) == {"flag": value}, text
    for text in ("yes", "1", ""):
        with pytest.raises(ValueError, match=f"^formulation option flag: '{text}' is not a bool$"):
            fdm.diffusion.parse_options("probe", [f"flag={text}"])
