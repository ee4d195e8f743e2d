"""Formulations and the denoiser against the closed forms of EDM Table 1 and FDM (paper digest 1.3, 1.4)."""

import math

import numpy as np
import pytest
import torch

from fdm.diffusion import FORMULATIONS, Denoiser, formulation

SIGMAS = np.geomspace(0.002, 80.0, 41)


def vp_sigma(t, beta_d=19.9, beta_min=0.1):
    return np.sqrt(np.exp(0.5 * beta_d * t**2 + beta_min * t) - 1)


def vp_t(sigma, beta_d=19.9, beta_min=0.1):
    return (np.sqrt(beta_min**2 + 2 * beta_d * np.log(1 + sigma**2)) - beta_min) / beta_d


def s_fdm(sigma, lo, hi, m):
    t = (sigma - lo) / (hi - lo)
    B = m * (0.1 * t + 9.95 * t**2)
    return np.exp(-B) * (1 + B)


def closed_form(name, sigma, m=2.0):
    """(c_skip, c_out, c_in, c_noise, lambda) written out directly from the tables, in numpy float64."""
    one = np.ones_like(sigma)
    if name.endswith("vp"):
        lo, hi = vp_sigma(1e-5), vp_sigma(1.0)
        c = (one, -sigma, 1 / np.sqrt(sigma**2 + 1), 999 * vp_t(sigma), 1 / sigma**2)
    elif name.endswith("ve"):
        lo, hi = 0.02, 100.0
        c = (one, sigma, one, np.log(sigma / 2), 1 / sigma**2)
    else:
        lo, hi = 0.002, 80.0
        sd = 0.5
        c = (
            sd**2 / (sigma**2 + sd**2),
            sigma * sd / np.sqrt(sigma**2 + sd**2),
            1 / np.sqrt(sigma**2 + sd**2),
            np.log(sigma) / 4,
            (sigma**2 + sd**2) / (sigma * sd) ** 2,
        )
    if name.startswith("fdm_"):
        c = (c[0], c[1], s_fdm(sigma, lo, hi, m), c[3], c[4])
    return c


@pytest.mark.parametrize("name", FORMULATIONS)
def test_coefficients_match_closed_forms(name):
    f = formulation(name)
    sigma = torch.tensor(SIGMAS, dtype=torch.float64)
    got = [*f.scalings(sigma), f.loss_weight(sigma)]
    for g, want, label in zip(
        got, closed_form(name, SIGMAS), ["c_skip", "c_out", "c_in", "c_noise", "lambda"], strict=True
    ):
        np.testing.assert_allclose(g.numpy(), want, rtol=1e-10, atol=1e-12, err_msg=f"{name} {label}")


@pytest.mark.parametrize("name", ["vp", "ve", "edm"])
def test_fdm_keeps_everything_but_c_in(name):
    base, fdm = formulation(name), formulation(f"fdm_{name}")
    sigma = torch.tensor(SIGMAS, dtype=torch.float64)
    for i in (0, 1, 3):
        torch.testing.assert_close(fdm.scalings(sigma)[i], base.scalings(sigma)[i])
    torch.testing.assert_close(fdm.loss_weight(sigma), base.loss_weight(sigma))
    assert (fdm.sigma_min, fdm.sigma_max) == (base.sigma_min, base.sigma_max)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    torch.testing.assert_close(fdm.sample_sigma(100, g1), base.sample_sigma(100, g2))


@pytest.mark.parametrize("name", ["vp", "ve", "edm"])
def test_unit_effective_weight(name):
    """lambda(sigma) c_out(sigma)^2 = 1: the raw network is trained with unit weight."""
    f = formulation(name)
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


@pytest.mark.parametrize("name", ["fdm_vp", "fdm_ve", "fdm_edm"])
@pytest.mark.parametrize("m", [1.0, 2.0])
def test_fdm_scale_monotone_from_one_to_zero(name, m):
    f = formulation(name, multiplier=m)
    sigma = torch.linspace(f.sigma_min, f.sigma_max, 2001, dtype=torch.float64)
    s = f.fdm_scale(sigma)
    assert s[0].item() == pytest.approx(1.0, abs=1e-15)
    assert torch.all(s[1:] < s[:-1])
    assert s[-1].item() < 1e-3


def test_multiplier_honoured_for_ve():
    """The reference ignores m for VE; here every base honours it."""
    sigma = torch.tensor([30.0], dtype=torch.float64)
    s1 = formulation("fdm_ve", multiplier=1.0).fdm_scale(sigma)
    s2 = formulation("fdm_ve", multiplier=2.0).fdm_scale(sigma)
    np.testing.assert_allclose(s1.numpy(), s_fdm(30.0, 0.02, 100.0, 1.0))
    np.testing.assert_allclose(s2.numpy(), s_fdm(30.0, 0.02, 100.0, 2.0))


@pytest.mark.parametrize("name", ["vp", "ve", "edm"])
def test_fdm_cin_scale_multiplies_the_base_input_scaling(name):
    """The ablation beyond the paper: c_in = s(sigma) c_in,base; so the EDM network's input keeps unit
    variance where s = 1, and the rest of the formulation is the paper's."""
    base, replace = formulation(name), formulation(f"fdm_{name}")
    scale = formulation(f"fdm_{name}", cin="scale")
    sigma = torch.tensor(SIGMAS, dtype=torch.float64)
    torch.testing.assert_close(scale.scalings(sigma)[2], replace.fdm_scale(sigma) * base.scalings(sigma)[2])
    for i in (0, 1, 3):
        torch.testing.assert_close(scale.scalings(sigma)[i], replace.scalings(sigma)[i])
    if name == "edm":  # input std sqrt(sigma^2 + sd^2) c_in = 1 at low sigma, times s(sigma) <= 1 above it
        std = (sigma**2 + 0.25).sqrt() * scale.scalings(sigma)[2]
        assert torch.all(std <= 1 + 1e-12) and abs(std[0].item() - 1) < 1e-6
    assert formulation(**scale.config()) == scale and scale.config()["cin"] == "scale"
    assert "cin" not in replace.config()  # the paper's models record what they always did
    with pytest.raises(ValueError, match="cin must be one of replace, scale"):
        formulation("fdm_edm", cin="multiply")


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
    # The cap is applied only while it is below 500, then lambda is uncapped (not held at 500).
    sigma = torch.tensor([0.01, 0.1, 1.0, 10.0], dtype=torch.float64)
    raw = f.loss_weight(sigma)
    torch.testing.assert_close(f.loss_weight(sigma, step=0), raw.clamp(max=5.0))
    torch.testing.assert_close(f.loss_weight(sigma, step=200), raw)
    assert raw[0] > 500  # so the last check above really shows "no cap" rather than "cap 500"
    assert math.isinf(formulation("fdm_vp", warmup=0).weight_cap(0))


def test_baselines_ignore_step():
    f = formulation("edm")
    sigma = torch.tensor([0.01, 1.0], dtype=torch.float64)
    torch.testing.assert_close(f.loss_weight(sigma, step=0), f.loss_weight(sigma))


def test_sigma_distributions():
    g = torch.Generator().manual_seed(0)
    n = 200_000
    ln = formulation("edm").sample_sigma(n, g).double().log()
    assert abs(ln.mean().item() + 1.2) < 4 * 1.2 / math.sqrt(n)
    assert abs(ln.std().item() - 1.2) < 0.01
    ve = formulation("ve")
    u = (formulation("ve").sample_sigma(n, g).double() / 0.02).log() / math.log(100 / 0.02)
    assert u.min() >= 0 and u.max() <= 1 + 1e-6
    assert abs(u.mean().item() - 0.5) < 0.005 and abs(u.var().item() - 1 / 12) < 0.002
    vp = formulation("vp")
    t = vp.t_of_sigma(vp.sample_sigma(n, g).double())
    assert t.min() >= 1e-5 - 1e-6 and t.max() <= 1 + 1e-6
    assert abs(t.mean().item() - 0.5) < 0.005
    assert ve.sample_sigma(8, torch.Generator().manual_seed(1)).dtype == torch.float32


def test_config_round_trip_and_errors():
    for name in FORMULATIONS:
        f = formulation(name)
        assert formulation(**f.config()) == f
    assert formulation("fdm_edm", multiplier=1.0, warmup=800).config()["warmup"] == 800
    with pytest.raises(ValueError, match="unknown formulation"):
        formulation("ddpm")
    with pytest.raises(ValueError, match="multiplier"):
        formulation("edm", multiplier=2.0)
    with pytest.raises(ValueError, match="positive"):
        formulation("fdm_edm", multiplier=0)


class RecordingNet(torch.nn.Module):
    """F(x, c_noise) = 3 x + c_noise, remembering what it was given."""

    img_resolution, img_channels, label_dim = 4, 1, 0

    def forward(self, x, noise_labels, class_labels=None, augment_labels=None):
        self.seen = (x.clone(), noise_labels.clone())
        return 3 * x + noise_labels.reshape(-1, 1, 1, 1)


@pytest.mark.parametrize("name", FORMULATIONS)
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
