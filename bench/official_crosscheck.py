"""Cross-check against the authors' code: the same weights and inputs through their code and ours.

Runs FDM's reference implementation (https://github.com/sail-sg/FDM; its networks, preconditioners,
losses and samplers, built on EDM's https://github.com/NVlabs/edm) from a checkout given by
``--official``, on the CPU, beside ``fdm``. Our weights go into their SongUNet through
``fdm.checkpoints.mapping.to_theirs`` (the one name and layout mapping, which ``fdm import-checkpoint``
inverts); their key set and FIR filter buffers must be exactly those the mapping gives. Checked:

- the denoiser D(x; sigma, labels, augment labels) of vp, ve, edm, fdm_vp, fdm_ve and fdm_edm on
  DDPM++ and NCSN++, with and without class labels, at 8 log-spaced sigmas over each formulation's range;
- the per-sample training loss (their VPLoss / VELoss / EDMLoss with their draws of sigma and noise
  replayed into ``fdm.training.loop.per_sample_loss``), with FDM's loss-weight cap after k loss calls
  (theirs) against ``loss_weight(sigma, step=k)`` (ours), and the gradients w.r.t. every parameter;
- Heun (their ``generate.edm_sampler``) at N = 10 and 18 and DPM-Solver++ (``generate.py --solver=dpm``:
  ``ablation_sampler`` with ``dpm_solver.py``) at NFE 5, 10 and 25 against ``fdm.sampling.sample``, from
  their per-seed latents, as float64 images and as the uint8 pixels ``generate.py`` writes;
- ``fdm import-checkpoint`` on training pickles their code writes (each of the six preconditioner classes
  with their loss and AugmentPipe, ``pickle.dump(dict(ema=..., ...))`` as their training loop does):
  the imported snapshot's D(x; sigma) against the network their ``pickle.load`` gives, its weights mapped
  back, and a pickle carrying a payload, which the importer must refuse without running it;
- where the two are expected to differ: FDM-VE's multiplier (a documented departure), VP's sigma -> t
  inverse (float32 log(1 + sigma^2) in theirs) and the last step of the weight-cap warmup.

It prints a table, writes what the authors' code produced to ``--out`` (the fixtures of
tests/test_official_equivalence.py) and exits 1 if any check fails. Cases and tolerances are in
tests/official_cases.py. Takes about 25 s on one core.

    PYTHONPATH=src python bench/official_crosscheck.py --official path/to/FDM [--out tests/fixtures/official]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import io
import json
import math
import pickle
import pickletools
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import official_cases as cases  # noqa: E402  (tests/, on the path above)
from authors_pickles import REAL_GLOBALS, REAL_OPCODES  # noqa: E402

from fdm import sampling  # noqa: E402
from fdm.checkpoints import import_checkpoint  # noqa: E402
from fdm.checkpoints.mapping import their_names, to_our_layout, to_theirs  # noqa: E402
from fdm.checkpoints.unpickle import RestrictedUnpickler  # noqa: E402
from fdm.diffusion import Denoiser  # noqa: E402
from fdm.errors import FdmError  # noqa: E402
from fdm.generation.generate import class_labels  # noqa: E402
from fdm.nets import ARCHITECTURES  # noqa: E402
from fdm.samples import quantize  # noqa: E402
from fdm.snapshot import load_denoiser  # noqa: E402
from fdm.training.loop import per_sample_loss  # noqa: E402

# The network settings of the authors' train.py for --arch=ddpmpp and --arch=ncsnpp.
AUTHORS_ARCHITECTURES = {
    "ddpmpp": dict(
        embedding_type="positional",
        encoder_type="standard",
        decoder_type="standard",
        channel_mult_noise=1,
        resample_filter=[1, 1],
    ),
    "ncsnpp": dict(
        embedding_type="fourier",
        encoder_type="residual",
        decoder_type="standard",
        channel_mult_noise=2,
        resample_filter=[1, 3, 3, 1],
    ),
}
PRECONDITIONERS = {
    "vp": "VPPrecond",
    "ve": "VEPrecond",
    "edm": "EDMPrecond",
    "fdm_vp": "FDM_VPPrecond",
    "fdm_ve": "FDM_VEPrecond",
    "fdm_edm": "FDM_EDMPrecond",
}
LOSSES = {"vp": "VPLoss", "ve": "VELoss", "edm": "EDMLoss"}


class Authors:
    """The authors' modules, imported from their checkout."""

    def __init__(self, checkout: Path):
        sys.path.insert(0, str(checkout))
        import generate
        import training.augment
        import training.loss
        import training.networks

        self.networks, self.loss, self.generate = training.networks, training.loss, generate
        self.augment = training.augment
        self.commit = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()

    def build(self, formulation: str, network: dict, **options) -> torch.nn.Module:
        """Their preconditioner of ``formulation`` around their SongUNet, configured as their train.py does
        for our ``fdm.nets.build`` options ``network``, with their initial weights."""
        config = dict(network)
        settings = {key: config.pop(key) for key in AUTHORS_ARCHITECTURES[config["arch"]] if key in config}
        arch = config.pop("arch")
        cls = getattr(self.networks, PRECONDITIONERS[formulation])
        if formulation.startswith("fdm_"):
            options = {"fdm_multiplier": cases.AUTHORS_MULTIPLIER, **options}
        return cls(**config, **{**AUTHORS_ARCHITECTURES[arch], **settings}, **options)

    def precond(self, formulation: str, net_name: str, ours: torch.nn.Module, **options) -> torch.nn.Module:
        """``build``, loaded with our network's weights."""
        precond = self.build(formulation, cases.NETWORKS[net_name], **options)
        fresh = precond.model.state_dict()
        mapped = to_theirs(ours)  # docs/networks.md, "The authors' state dict"
        assert set(mapped) == set(fresh), sorted(set(mapped) ^ set(fresh))
        # Their FIR filters, as their code builds them, are the filters our Resample modules apply.
        filters = [k for k in fresh if k.endswith(".resample_filter")]
        assert all(torch.equal(fresh[k], mapped[k]) for k in filters), filters
        precond.model.load_state_dict(mapped, strict=True)
        return precond


# Inputs -------------------------------------------------------------------------------------------------------


def inputs(net_name: str) -> dict[str, torch.Tensor]:
    """Clean images y in [-1, 1], noise n, one-hot class labels and augmentation labels for one network."""
    config = cases.NETWORKS[net_name]
    generator = torch.Generator().manual_seed(1000 + cases.WEIGHT_SEEDS[net_name])
    shape = [cases.BATCH, config["img_channels"], config["img_resolution"], config["img_resolution"]]
    result = {
        "y": torch.rand(shape, generator=generator) * 2 - 1,
        "noise": torch.randn(shape, generator=generator),
        "augment_labels": torch.randn(cases.BATCH, config["augment_dim"], generator=generator) * 0.5,
    }
    if config["label_dim"]:
        classes = torch.randint(config["label_dim"], (cases.BATCH,), generator=generator)
        result["class_labels"] = torch.nn.functional.one_hot(classes, config["label_dim"]).float()
    return result


def loss_draw(formulation: str) -> torch.Tensor:
    """What the authors' loss draws for sigma, spread over its distribution: N(0, 1) for EDM, U(0, 1) else.

    EDM: ln sigma = -1.2 + 1.2 z, z in [-2.5, 2.5] (sigma 0.015 to 6.0). VE: sigma = 0.02 * 5000^u.
    VP: t = 1 + u (1e-5 - 1), u up to 0.999 (sigma down to 0.01). The smallest sigmas have lambda > 500,
    above every value of FDM's cap.
    """
    if formulation.endswith("edm"):
        draw = torch.linspace(-2.5, 2.5, cases.BATCH)
    elif formulation.endswith("ve"):
        draw = torch.linspace(0.01, 0.99, cases.BATCH)
    else:
        draw = torch.linspace(0.01, 0.999, cases.BATCH)
    return draw.reshape(-1, 1, 1, 1)


@contextlib.contextmanager
def prescribed_draws(*draws: torch.Tensor):
    """torch.rand, torch.randn and torch.randn_like return ``draws`` in order (checked by shape)."""
    queue = list(draws)

    def draw(size_or_like, *args, **kwargs):
        size = size_or_like.shape if isinstance(size_or_like, torch.Tensor) else torch.Size(size_or_like)
        value = queue.pop(0)
        if value.shape != size:
            raise AssertionError(
                f"the authors' code drew {tuple(size)}, the next prescribed draw is {tuple(value.shape)}"
            )
        return value.clone()

    with (
        mock.patch.object(torch, "rand", draw),
        mock.patch.object(torch, "randn", draw),
        mock.patch.object(torch, "randn_like", draw),
    ):
        yield
    if queue:
        raise AssertionError(f"{len(queue)} prescribed draws were not used")


# The checks ---------------------------------------------------------------------------------------------------


class Report:
    """Rows of (quantity, formulation, max abs difference, max scaled difference, tolerance, uint8, ok).

    A row keeps the largest differences over its cases. ``expect_equal=False`` marks a departure: the
    row passes when the difference exceeds the tolerance. ``check`` adds a row that is a yes or no.
    """

    def __init__(self):
        self.rows: dict[tuple[str, str], dict] = {}

    def add(self, quantity, variant, ours, theirs, scale, tolerance, uint8=None, expect_equal=True):
        ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
        abs_diff = float(np.abs(ours - theirs).max())
        scaled = cases.scaled_error(ours, theirs, scale)
        row = self.rows.setdefault(
            (quantity, variant),
            dict(abs=0.0, scaled=0.0, tolerance=tolerance, uint8=[0, 0, 0, 0], expect_equal=expect_equal),
        )
        row["abs"], row["scaled"] = max(row["abs"], abs_diff), max(row["scaled"], scaled)
        if uint8 is not None:
            row["uint8"] = [a + b for a, b in zip(row["uint8"], uint8, strict=True)]

    def check(self, quantity, variant, passed: bool):
        self.rows[quantity, variant] = dict(passed=passed)

    def ok(self, row) -> bool:
        if "passed" in row:
            return row["passed"]
        within = row["scaled"] <= row["tolerance"]
        return (within and row["uint8"][1] == 0) if row["expect_equal"] else not within

    def table(self) -> str:
        lines = [
            "| quantity | formulation | max abs diff | max scaled diff | tolerance "
            "| uint8 differing (near a boundary) / unclipped of all | ok |",
            "|---|---|---|---|---|---|---|",
        ]
        by_formulation = sorted(self.rows.items(), key=lambda item: cases.FORMULATIONS.index(item[0][1]))
        for (quantity, variant), row in by_formulation:
            if "passed" in row:
                lines.append(f"| {quantity} | {variant} |  |  |  |  | {'yes' if self.ok(row) else 'NO'} |")
                continue
            differing, unexplained, unclipped, total = row["uint8"]
            uint8 = f"{differing} ({differing - unexplained}) / {unclipped} of {total}" if total else ""
            tolerance = f"{'<=' if row['expect_equal'] else '>'} {row['tolerance']:.0e}"
            lines.append(
                f"| {quantity} | {variant} | {row['abs']:.2e} | {row['scaled']:.2e} | {tolerance} | {uint8} "
                f"| {'yes' if self.ok(row) else 'NO'} |"
            )
        return "\n".join(lines)

    def all_ok(self) -> bool:
        return all(self.ok(row) for row in self.rows.values())


def check_denoisers(authors: Authors, report: Report, fixtures: dict) -> None:
    for net_name in cases.DENOISER_NETWORKS:
        ours_net = cases.network(net_name)
        data = inputs(net_name)
        for key, value in data.items():
            fixtures["denoiser"][f"{net_name}/{key}"] = value.numpy()
        labels, augment = data.get("class_labels"), data["augment_labels"]
        for name in cases.FORMULATIONS:
            formulation = cases.our_formulation(name)
            precond = authors.precond(name, net_name, ours_net).eval()
            ours = Denoiser(ours_net, formulation).eval()
            sigma = torch.tensor(
                np.geomspace(formulation.sigma_min, formulation.sigma_max, cases.BATCH), dtype=torch.float32
            )
            x = data["y"] + sigma.reshape(-1, 1, 1, 1) * data["noise"]
            with torch.no_grad():
                theirs_D = precond(x, sigma, labels, augment_labels=augment)
                ours_D = ours(x, sigma, labels, augment)
            report.add("D(x; sigma)", name, ours_D, theirs_D, cases.row_scale(theirs_D), cases.DENOISER_RTOL)
            fixtures["denoiser"][f"{net_name}/{name}/sigma"] = sigma.numpy()
            fixtures["denoiser"][f"{net_name}/{name}/D"] = theirs_D.numpy()
            if name == "vp":
                check_vp_rounding(report, fixtures, net_name, ours_net, precond, x, sigma, data, theirs_D)
            if name == "fdm_ve":
                check_ve_multiplier(authors, report, net_name, ours_net, x, sigma, data, theirs_D)
            check_loss(authors, report, fixtures, net_name, name, ours_net, precond, data)


def check_vp_rounding(report, fixtures, net_name, ours_net, precond, x, sigma, data, theirs_D):
    """Departure: our VP computes t(sigma) with log1p; theirs with float32 log(1 + sigma^2)."""
    with torch.no_grad():
        real = Denoiser(ours_net, cases.our_formulation("vp", vp_float32_log=False)).eval()
        ours_D = real(x, sigma, data.get("class_labels"), data["augment_labels"])
        theirs_c_noise = (precond.M - 1) * precond.sigma_inv(sigma)
    exact = 999 * cases.our_formulation("vp", vp_float32_log=False).t_of_sigma(sigma.double())
    ours_c_noise = real.formulation.scalings(sigma)[3]
    fixtures["denoiser"][f"{net_name}/vp/c_noise"] = theirs_c_noise.numpy()
    large = sigma >= 1
    scale = cases.row_scale(theirs_D)
    arch = "NCSN++" if net_name.startswith("ncsnpp") else "DDPM++"
    report.add(
        f"D, log1p VP, sigma >= 1, {arch}",
        "vp",
        ours_D[large],
        theirs_D[large],
        scale[large],
        cases.DENOISER_RTOL,
    )
    # NCSN++'s Fourier features (frequencies ~ 16 x 2 pi) turn the c_noise difference into a visible one.
    report.add(
        f"D, log1p VP, sigma < 1, {arch}",
        "vp",
        ours_D[~large],
        theirs_D[~large],
        scale[~large],
        cases.DENOISER_RTOL,
        expect_equal=arch == "DDPM++",
    )
    c_noise_scale = np.maximum(1.0, exact.abs().numpy())
    report.add("c_noise - float64 c_noise: ours", "vp", ours_c_noise, exact, c_noise_scale, 1e-6)
    report.add(
        "c_noise - float64 c_noise: theirs",
        "vp",
        theirs_c_noise,
        exact,
        c_noise_scale,
        1e-6,
        expect_equal=False,
    )


def check_ve_multiplier(authors, report, net_name, ours_net, x, sigma, data, theirs_D):
    """Departure: their FDM_VEPrecond ignores fdm_multiplier (m = 1); ours honours it."""
    labels, augment = data.get("class_labels"), data["augment_labels"]
    with torch.no_grad():
        theirs_m1 = authors.precond("fdm_ve", net_name, ours_net, fdm_multiplier=1.0).eval()(
            x, sigma, labels, augment_labels=augment
        )
        m2 = Denoiser(ours_net, dataclasses.replace(cases.our_formulation("fdm_ve"), multiplier=2.0)).eval()
        ours_m2 = m2(x, sigma, labels, augment)
    scale = cases.row_scale(theirs_D)
    report.add("D, theirs m=1 vs m=2", "fdm_ve", theirs_m1, theirs_D, scale, 0.0)
    report.add(
        "D, ours m=2 vs theirs", "fdm_ve", ours_m2, theirs_D, scale, cases.DENOISER_RTOL, expect_equal=False
    )


def check_loss(authors, report, fixtures, net_name, name, ours_net, precond, data):
    """Per-sample losses at LOSS_STEPS (their clamp after k calls vs our cap at step k) and gradients."""
    base = name.removeprefix("fdm_")
    options = dict(warmup_ite=float(cases.WARMUP)) if name.startswith("fdm_") else {}
    loss_fn = getattr(authors.loss, LOSSES[base])(**options)
    formulation = cases.our_formulation(name)
    ours = Denoiser(ours_net, formulation).train()
    precond.train()
    y, noise, labels, augment = data["y"], data["noise"], data.get("class_labels"), data["augment_labels"]
    draw = loss_draw(name)
    seen = {}

    def recording_net(x, sigma, class_labels, augment_labels=None):
        seen["sigma"] = sigma.detach().clone()
        seen["D"] = precond(x, sigma, class_labels, augment_labels=augment_labels)
        return seen["D"]

    def identity_net(x, sigma, class_labels, augment_labels=None):
        return x

    calls, losses, caps = 0, [], []
    key = f"{net_name}/{name}"
    for step in cases.LOSS_STEPS:
        while calls < step:  # the clamp moves once per call, whatever the network and data
            loss_fn(net=identity_net, images=torch.zeros(1, 1, 1, 1), labels=None)
            calls += 1
        warming = bool(loss_fn.warmup_ite) and loss_fn.clamp_cur < loss_fn.clamp_max
        caps.append(loss_fn.clamp_cur if warming else math.inf)
        with prescribed_draws(draw, noise), torch.set_grad_enabled(step == cases.GRADIENT_STEP):
            theirs = loss_fn(
                net=recording_net, images=y, labels=labels, augment_pipe=lambda images: (images, augment)
            )
        calls += 1
        sigma = seen["sigma"].reshape(-1)
        with torch.set_grad_enabled(step == cases.GRADIENT_STEP):
            ours_loss = per_sample_loss(ours, formulation, y, sigma, noise, labels, augment, step)
        theirs_loss = theirs.sum(dim=(1, 2, 3))
        residual_scale = cases.residual_scale(seen["D"].detach(), y)
        scale = formulation.loss_weight(sigma, step=step).numpy() * residual_scale
        beyond_warmup = name.startswith("fdm_") and step == cases.WARMUP
        quantity = "loss, step = warmup" if beyond_warmup else "per-sample loss"
        report.add(
            quantity,
            name,
            ours_loss.detach(),
            theirs_loss.detach(),
            scale,
            cases.LOSS_RTOL,
            expect_equal=not beyond_warmup,
        )
        if step == cases.GRADIENT_STEP:
            check_gradients(report, fixtures, key, name, ours_net, precond, ours_loss.sum(), theirs.sum())
        losses.append(theirs_loss.detach().numpy())
    if name.startswith("fdm_"):
        # Their clamp after k calls against our cap at optimizer step k (inf: no cap), away from the end.
        ours_caps = np.array([formulation.weight_cap(step) for step in cases.LOSS_STEPS])
        away = np.array(cases.LOSS_STEPS) != cases.WARMUP
        sentinel = lambda caps: np.where(np.isinf(caps), -1.0, caps)
        theirs_caps = sentinel(np.array(caps))[away]
        report.add(
            "weight cap, steps != warmup",
            name,
            sentinel(ours_caps)[away],
            theirs_caps,
            np.abs(theirs_caps),
            1e-12,
        )
    fixtures["loss"][f"{key}/sigma"] = seen["sigma"].reshape(-1).numpy()
    fixtures["loss"][f"{key}/cap"] = np.array(caps)
    fixtures["loss"][f"{key}/residual_scale"] = residual_scale
    fixtures["loss"][f"{key}/loss"] = np.stack(losses)


def check_gradients(report, fixtures, key, name, ours_net, precond, ours_total, theirs_total):
    names = [n for n, _ in ours_net.named_parameters()]
    ours_grads = torch.autograd.grad(ours_total, list(ours_net.parameters()))
    their_params = dict(precond.model.named_parameters())
    keys = their_names(ours_net)
    their_grads = torch.autograd.grad(theirs_total, [their_params[keys[n]] for n in names])
    their_grads = [to_our_layout(n, g) for n, g in zip(names, their_grads, strict=True)]
    sums = np.array([g.double().sum().item() for g in their_grads])
    l1 = np.array([g.double().abs().sum().item() for g in their_grads])
    l2 = np.array([g.double().norm().item() for g in their_grads])
    ours_sums = np.array([g.double().sum().item() for g in ours_grads])
    ours_l2 = np.array([g.double().norm().item() for g in ours_grads])
    report.add("gradient sums", name, ours_sums, sums, l1, cases.GRADIENT_RTOL)
    report.add("gradient norms", name, ours_l2, l2, l2, cases.GRADIENT_RTOL)
    for ours_grad, their_grad in zip(ours_grads, their_grads, strict=True):
        largest = their_grad.abs().max().item()
        report.add("gradients, every element", name, ours_grad, their_grad, largest, cases.GRADIENT_RTOL)
    for tensor_name in cases.GRADIENT_TENSORS:
        i = names.index(tensor_name)
        fixtures["loss"][f"{key}/grad/{tensor_name}"] = their_grads[i].numpy()
    fixtures["loss"][f"{key}/grad_sum"] = sums
    fixtures["loss"][f"{key}/grad_l1"] = l1
    fixtures["loss"][f"{key}/grad_l2"] = l2


def check_samplers(authors: Authors, report: Report, fixtures: dict) -> None:
    for name in cases.FORMULATIONS:
        net_name = cases.SAMPLER_NETWORK[name]
        ours_net = cases.network(net_name)
        config = cases.NETWORKS[net_name]
        precond = authors.precond(name, net_name, ours_net).eval()
        ours = Denoiser(ours_net, cases.our_formulation(name)).eval()
        # generate.py: per-seed generators; the latent first, then the class (randint) from each.
        shape = [len(cases.SEEDS), config["img_channels"], config["img_resolution"], config["img_resolution"]]
        rnd = authors.generate.StackedRandomGenerator("cpu", cases.SEEDS)
        latents = rnd.randn(shape, device="cpu")
        labels = None
        if config["label_dim"]:
            labels = torch.eye(config["label_dim"])[
                rnd.randint(config["label_dim"], size=shape[:1], device="cpu")
            ]
        generators = sampling.seed_generators(cases.SEEDS)
        ours_latents = sampling.randn(generators, shape)
        ours_labels = None
        if config["label_dim"]:
            ours_labels = torch.nn.functional.one_hot(
                class_labels(generators, config["label_dim"]), config["label_dim"]
            ).float()
        report.add("latents (per-seed protocol)", name, ours_latents, latents, 1.0, 0.0)
        if labels is not None:
            report.add("class labels (per-seed protocol)", name, ours_labels, labels, 1.0, 0.0)
            fixtures["samplers"][f"{name}/class_labels"] = labels.numpy()
        fixtures["samplers"][f"{name}/latents"] = latents.numpy()
        runs = [("heun", n, authors.generate.edm_sampler) for n in cases.HEUN_STEPS]
        runs += [("dpmpp_3s", n, authors.generate.ablation_sampler) for n in cases.DPM_NFE]
        for sampler, steps, their_sampler in runs:
            with torch.no_grad():
                theirs = their_sampler(precond, latents, labels, randn_like=rnd.randn_like, num_steps=steps)
            images = sampling.sample(ours, ours_latents, sampler, steps, class_labels=ours_labels)
            # generate.py's PNG pixels: (x * 127.5 + 128).clip(0, 255), truncated to uint8, NHWC.
            theirs_uint8 = (
                np.clip(theirs.numpy() * 127.5 + 128, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
            )
            tolerance = cases.IMAGE_RTOL * cases.row_scale(theirs.numpy())
            differing, unexplained = cases.uint8_mismatches(
                quantize(images), theirs_uint8, theirs.numpy(), tolerance
            )
            label = f"{'Heun N' if sampler == 'heun' else 'DPM-Solver++ NFE'} = {steps}"
            unclipped = np.count_nonzero((theirs_uint8 > 0) & (theirs_uint8 < 255))
            uint8 = (differing, unexplained, unclipped, theirs_uint8.size)
            report.add(
                label, name, images, theirs, cases.row_scale(theirs.numpy()), cases.IMAGE_RTOL, uint8=uint8
            )
            fixtures["samplers"][f"{name}/{sampler}_{steps}"] = theirs.numpy()
            fixtures["samplers"][f"{name}/{sampler}_{steps}_uint8"] = theirs_uint8


class Payload:
    """Pickles as a call of ``open(path, "w")``: loading it with ``pickle.load`` creates the file."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def training_pickle(authors: Authors, name: str, path: Path, payload: Payload | None = None) -> None:
    """Write what the authors' training loop pickles for ``name`` to ``path``.

    Their preconditioner (train.py's settings, their initialisation, then every parameter perturbed as in
    tests/official_cases.py), their loss (FDM's with warmup_ite) and AugmentPipe (train.py --augment=0.12),
    saved as training/training_loop.py does: an EMA copy in eval mode without grads, pickle.dump(dict(...)).
    """
    network = cases.layouts()[f"import/{name}"]
    seed = cases.IMPORT_SEED + cases.FORMULATIONS.index(name)
    torch.manual_seed(seed)
    precond = authors.build(name, network, model_type="SongUNet", use_fp16=False)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in precond.parameters():
            parameter.add_(cases.PERTURBATION * torch.randn(parameter.shape, generator=generator))
    warmup = dict(warmup_ite=float(cases.WARMUP)) if name.startswith("fdm_") else {}
    loss_fn = getattr(authors.loss, LOSSES[name.removeprefix("fdm_")])(**warmup)
    augment_pipe = authors.augment.AugmentPipe(
        p=0.12, xflip=1e8, yflip=1, scale=1, rotate_frac=1, aniso=1, translate_frac=1
    )
    dataset_kwargs = dict(
        class_name="training.dataset.ImageFolderDataset",
        path="datasets/images.zip",
        use_labels=bool(network["label_dim"]),
        xflip=False,
        cache=True,
        resolution=network["img_resolution"],
        max_size=50000,
    )
    ema = copy.deepcopy(precond).eval().requires_grad_(False)
    if payload is not None:
        ema.payload = payload
    data = dict(ema=ema, loss_fn=loss_fn, augment_pipe=augment_pipe, dataset_kwargs=dataset_kwargs)
    with open(path, "wb") as f:
        pickle.dump(data, f)


def structure(path: Path) -> tuple[set[str], set[str]]:
    """The globals (``module.name``) and opcodes of a pickle, read with the importer's unpickler."""
    seen = set()

    class Recording(RestrictedUnpickler):
        def find_class(self, module, name):
            seen.add(f"{module}.{name}")
            return super().find_class(module, name)

    data = path.read_bytes()
    Recording(io.BytesIO(data)).load()
    return seen, {op.name for op, _, _ in pickletools.genops(data)}


def check_imports(authors: Authors, report: Report, work: Path) -> str:
    """`fdm import-checkpoint` on training pickles of the authors' code: their structure against the tests'
    stand-ins (tests/authors_pickles.py), D(x; sigma) of the imported snapshot against the network their
    generate.py loads from the same file, and the weights mapped back to theirs. Then a pickle with a
    payload: refused by the importer, live under pickle.load. Returns the refusal, one line."""
    for name in cases.FORMULATIONS:
        net_name = cases.IMPORT_CASES[name]["network"]
        path = work / f"{name}-network-snapshot-000000.pkl"
        training_pickle(authors, name, path)
        report.check(
            "import-checkpoint pickle: the globals and opcodes of the tests' stand-ins",
            name,
            structure(path) == (REAL_GLOBALS, REAL_OPCODES),
        )
        import_checkpoint(str(path), work / f"{name}.safetensors")  # the restricted unpickler: nothing runs
        ours, _ = load_denoiser(work / f"{name}.safetensors")
        with open(path, "rb") as f:
            theirs = pickle.load(f)["ema"]  # as their generate.py loads it, running their pickled code
        mapped, state = to_theirs(ours.net), theirs.model.state_dict()
        assert set(mapped) == set(state), sorted(set(mapped) ^ set(state))
        for key, tensor in state.items():
            report.add("import-checkpoint weights, mapped back", name, mapped[key], tensor, 1.0, 0.0)
        data = inputs(net_name)
        labels, augment = data.get("class_labels"), data["augment_labels"]
        sigma = torch.tensor(np.geomspace(ours.sigma_min, ours.sigma_max, cases.BATCH), dtype=torch.float32)
        x = data["y"] + sigma.reshape(-1, 1, 1, 1) * data["noise"]
        with torch.no_grad():
            theirs_D = theirs(x, sigma, labels, augment_labels=augment)
            ours_D = ours(x, sigma, labels, augment)
        report.add(
            "import-checkpoint D(x; sigma)",
            name,
            ours_D,
            theirs_D,
            cases.row_scale(theirs_D),
            cases.DENOISER_RTOL,
        )

    marker, path = work / "created-by-the-payload", work / "payload.pkl"
    training_pickle(authors, "edm", path, payload=Payload(marker))
    try:
        import_checkpoint(str(path), work / "payload.safetensors")
        message = ""
    except FdmError as err:
        message = str(err).replace(str(work), "<tmp>")
    refused = "io.open" in message and "\n" not in message
    created_by_import = marker.exists() or (work / "payload.safetensors").exists()
    with open(path, "rb") as f:
        pickle.load(f)["ema"].payload.close()  # the control: the stock unpickler runs the payload
    report.check(
        "import-checkpoint refuses a payload (io.open): one-line error, no file; pickle.load runs it",
        "edm",
        refused and not created_by_import and marker.exists(),
    )
    return message


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official", required=True, type=Path, help="checkout of github.com/sail-sg/FDM")
    parser.add_argument("--out", type=Path, default=cases.FIXTURES, help="where to write the fixtures")
    args = parser.parse_args()
    torch.set_num_threads(1)
    authors = Authors(args.official.resolve())
    for arch, settings in AUTHORS_ARCHITECTURES.items():
        assert {
            k: list(v) if k == "resample_filter" else v for k, v in ARCHITECTURES[arch].items()
        } == settings, arch

    report = Report()
    fixtures = {"networks": {}, "denoiser": {}, "loss": {}, "samplers": {}}
    for net_name in cases.NETWORKS:
        net = cases.network(net_name)
        fixtures["networks"][f"{net_name}/names"] = np.array([n for n, _ in net.named_parameters()])
        fixtures["networks"][f"{net_name}/sums"] = np.array(
            [p.double().sum().item() for p in net.parameters()]
        )
        fixtures["networks"][f"{net_name}/seed"] = np.array(cases.WEIGHT_SEEDS[net_name])
    for key, network in cases.layouts().items():  # what to_theirs must give: test_mapping_...
        their_state = authors.build("edm", network).model.state_dict()
        fixtures["networks"][f"{key}/authors_state"] = cases.state_layout(their_state)
    check_denoisers(authors, report, fixtures)
    check_samplers(authors, report, fixtures)
    with tempfile.TemporaryDirectory() as work:
        refusal = check_imports(authors, report, Path(work))

    print(f"authors' code: {cases.AUTHORS_REPOSITORY} at {authors.commit}\n")
    print(report.table())
    print(f"\nthe payload's refusal: {refusal}")
    args.out.mkdir(parents=True, exist_ok=True)
    for part, arrays in fixtures.items():
        np.savez_compressed(args.out / f"{part}.npz", authors_commit=np.array(authors.commit), **arrays)
    manifest = dict(
        authors_repository=cases.AUTHORS_REPOSITORY,
        authors_commit=authors.commit,
        command="PYTHONPATH=src python bench/official_crosscheck.py --official <checkout of sail-sg/FDM>",
        torch=torch.__version__,
        networks=cases.NETWORKS,
        weight_seeds=cases.WEIGHT_SEEDS,
        perturbation=cases.PERTURBATION,
        formulation_options=cases.FORMULATION_OPTIONS,
        import_cases=cases.IMPORT_CASES,
        import_seed=cases.IMPORT_SEED,
        authors_fdm_multiplier=cases.AUTHORS_MULTIPLIER,
        warmup=cases.WARMUP,
        loss_steps=cases.LOSS_STEPS,
        gradient_step=cases.GRADIENT_STEP,
        sampler_network=cases.SAMPLER_NETWORK,
        seeds=cases.SEEDS,
        heun_steps=cases.HEUN_STEPS,
        dpm_nfe=cases.DPM_NFE,
    )
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shown = args.out.resolve()
    print(f"\nfixtures written to {shown.relative_to(ROOT) if shown.is_relative_to(ROOT) else shown}")
    if not report.all_ok():
        print("FAILED: some quantity is outside its tolerance (rows marked NO)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
