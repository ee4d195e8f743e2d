"""Tests for fdm.nets: the SongUNet family (DDPM++ / NCSN++)."""

import math

import pytest
import torch
import torch.nn.functional as F

from fdm.nets import build
from fdm.nets.layers import GAIN_ATTN, GAIN_LAST, Conv2d, Linear, PositionalEmbedding, Resample

# Small configuration shared by the functional tests: two resolutions, attention at the lower one.
SMALL = dict(model_channels=16, channel_mult=(1, 2), num_blocks=1)


@pytest.fixture(autouse=True)
def one_thread():
    """These networks are tiny: a second thread only adds synchronisation, which is slow on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_net(arch="ddpmpp", res=8, channels=1, seed=0, **kw):
    torch.manual_seed(seed)
    options = {**SMALL, "attn_resolutions": (res // 2,), **kw}
    return build(arch, res, channels, **options)


def randomised(net):
    """Give every parameter a generic value.

    At initialisation each residual branch and the output head are scaled by 1e-5, so conditioning
    and dropout move the output by only ~1e-4 of its size; with generic weights their effect is O(1).
    """
    torch.manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.2)
    return net


def n_params(net):
    return sum(p.numel() for p in net.parameters())


def relative_change(a, b):
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / a.abs().max())


def test_branches_start_near_zero_but_conditioning_is_wired():
    # At initialisation the residual branches (where the embedding enters) are scaled by 1e-5.
    net = small_net(label_dim=10).eval()
    x = torch.randn(2, 1, 8, 8)
    y = net(x, torch.zeros(2), class_labels=torch.eye(10)[:2])
    for other in (
        net(x, torch.ones(2), class_labels=torch.eye(10)[:2]),
        net(x, torch.zeros(2), class_labels=torch.eye(10)[2:4]),
    ):
        assert 0 < relative_change(y, other) < 1e-3


# The paper's networks (docs/paper.md section 3; sizes of the released checkpoints).
@pytest.mark.parametrize(
    "arch, res, label_dim, channel_mult, expected",
    [
        ("ddpmpp", 32, 10, (2, 2, 2), 55_735_299),  # CIFAR-10 EDM / FDM-EDM
        ("ddpmpp", 32, 10, (1, 2, 2, 2), 61_806_979),  # CIFAR-10 VP / FDM-VP
        ("ncsnpp", 32, 10, (1, 2, 2, 2), 62_763_907),  # CIFAR-10 VE / FDM-VE
        ("ddpmpp", 64, 0, (1, 2, 2, 2), 61_805_571),  # FFHQ / AFHQv2 EDM, VP
        ("ncsnpp", 64, 0, (1, 2, 2, 2), 62_761_091),  # FFHQ / AFHQv2 VE
    ],
)
def test_paper_parameter_counts(arch, res, label_dim, channel_mult, expected):
    with torch.device("meta"):
        net = build(arch, res, 3, label_dim=label_dim, augment_dim=9, channel_mult=channel_mult)
    assert n_params(net) == expected
    assert (net.img_resolution, net.img_channels, net.label_dim, net.augment_dim) == (res, 3, label_dim, 9)


@pytest.mark.parametrize("arch", ["ddpmpp", "ncsnpp"])
@pytest.mark.parametrize("res", [8, 16, 32])
@pytest.mark.parametrize("conditional", [False, True])
def test_output_shape_equals_input_shape(arch, res, conditional):
    dims = dict(label_dim=10, augment_dim=9) if conditional else {}
    net = small_net(arch, res, channels=3, **dims)
    x = torch.randn(2, 3, res, res)
    labels = dict(class_labels=torch.eye(10)[[3, 7]], augment_labels=torch.randn(2, 9)) if conditional else {}
    y = net(x, torch.randn(2), **labels)
    assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()


def variant(encoder_type="standard", decoder_type="standard"):
    """NCSN++ at 16x16 over three levels with the box filter: downsampling is 2x2 averaging, upsampling
    repeats each pixel over a 2x2 block (test_box_filter_is_average_pool_and_nearest_upsampling)."""
    net = small_net(
        "ncsnpp", 16, channels=2, channel_mult=(1, 2, 2), encoder_type=encoder_type, decoder_type=decoder_type,
        resample_filter=(1, 1),
    )  # fmt: skip
    return randomised(net).eval()


def silenced(conv):
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()


@pytest.mark.parametrize("encoder_type", ["standard", "skip", "residual"])
@pytest.mark.parametrize("decoder_type", ["standard", "skip"])
def test_encoder_and_decoder_variants_keep_the_shape(encoder_type, decoder_type):
    net = variant(encoder_type, decoder_type)
    x = torch.randn(2, 2, 16, 16)
    assert net(x, torch.randn(2)).shape == x.shape


def test_encoder_variants_feed_the_image_in_their_own_way():
    """With the input convolution silenced, the image reaches the output only through the encoder's own
    image path: none for "standard"; for "skip", the image averaged over 2x2 blocks (and coarser), so a
    change that keeps every block's mean is invisible; for "residual", convolutions at the finer level
    first, which see it."""
    torch.manual_seed(2)
    x, c_noise = torch.randn(2, 2, 16, 16), torch.randn(2)
    r = torch.randn(2, 2, 16, 16)
    within_blocks = r - F.interpolate(F.avg_pool2d(r, 2), scale_factor=2, mode="nearest")  # block means 0
    across_blocks = F.interpolate(torch.randn(2, 2, 8, 8), scale_factor=2, mode="nearest")
    outputs = {}
    for encoder_type in ("standard", "skip", "residual"):
        net = variant(encoder_type)
        silenced(net.stem)
        with torch.no_grad():
            outputs[encoder_type] = [net(x + d, c_noise) for d in (0, within_blocks, across_blocks)]
    y, y_within, y_across = outputs["standard"]
    assert torch.equal(y, y_within) and torch.equal(y, y_across)
    y, y_within, y_across = outputs["skip"]
    torch.testing.assert_close(y_within, y, rtol=0, atol=1e-5 * float(y.abs().max()))
    assert relative_change(y, y_across) > 1e-3
    y, y_within, y_across = outputs["residual"]
    assert relative_change(y, y_within) > 1e-3 and relative_change(y, y_across) > 1e-3


def test_decoder_variants_build_the_output_their_own_way():
    """With the full-resolution output head silenced, the "standard" decoder (that head only) outputs 0;
    the "skip" decoder still outputs the upsampled sum of its coarser heads: 2x2 blocks of equal pixels."""
    x, c_noise = torch.randn(2, 2, 16, 16), torch.randn(2)
    for decoder_type in ("standard", "skip"):
        net = variant(decoder_type=decoder_type)
        silenced(net.out_heads["0"][-1])
        with torch.no_grad():
            y = net(x, c_noise)
        if decoder_type == "standard":
            assert not y.any()
        else:
            assert y.abs().min() > 0
            blocks = F.interpolate(y[..., ::2, ::2], scale_factor=2, mode="nearest")
            assert torch.equal(y, blocks)


def test_output_depends_on_noise_labels():
    for arch in ("ddpmpp", "ncsnpp"):
        net = randomised(small_net(arch)).eval()
        x = torch.randn(3, 1, 8, 8)
        y0, y1 = net(x, torch.zeros(3)), net(x, torch.full((3,), 0.5))
        assert relative_change(y0, y1) > 1e-3


def test_output_depends_on_class_and_augment_labels():
    net = randomised(small_net(label_dim=10, augment_dim=9)).eval()
    x, c_noise = torch.randn(2, 1, 8, 8), torch.randn(2)
    y3 = net(x, c_noise, class_labels=torch.eye(10)[[3, 3]])
    y7 = net(x, c_noise, class_labels=torch.eye(10)[[7, 7]])
    assert relative_change(y3, y7) > 1e-3
    y_aug = net(x, c_noise, class_labels=torch.eye(10)[[3, 3]], augment_labels=torch.ones(2, 9))
    assert relative_change(y3, y_aug) > 1e-3
    # Missing augment labels mean "not augmented", i.e. the all-zero augmentation vector.
    y_zero = net(x, c_noise, class_labels=torch.eye(10)[[3, 3]], augment_labels=torch.zeros(2, 9))
    torch.testing.assert_close(y3, y_zero, rtol=0, atol=0)


def test_full_label_dropout_removes_the_label_in_training_only():
    net = randomised(small_net(label_dim=10, dropout=0.0, label_dropout=1.0)).train()
    x, c_noise = torch.randn(2, 1, 8, 8), torch.randn(2)
    y3 = net(x, c_noise, class_labels=torch.eye(10)[[3, 3]])
    y7 = net(x, c_noise, class_labels=torch.eye(10)[[7, 7]])
    y_none = net(x, c_noise)
    torch.testing.assert_close(y3, y7, rtol=0, atol=0)
    torch.testing.assert_close(y3, y_none, rtol=0, atol=0)
    net.eval()
    y3 = net(x, c_noise, class_labels=torch.eye(10)[[3, 3]])
    assert relative_change(y3, net(x, c_noise, class_labels=torch.eye(10)[[7, 7]])) > 1e-3


def test_eval_is_deterministic_and_training_applies_dropout():
    net = randomised(small_net(dropout=0.5))
    x, c_noise = torch.randn(2, 1, 8, 8), torch.randn(2)
    net.eval()
    torch.testing.assert_close(net(x, c_noise), net(x, c_noise), rtol=0, atol=0)
    net.train()
    assert relative_change(net(x, c_noise), net(x, c_noise)) > 1e-3


def test_images_do_not_interact_within_a_batch():
    # GroupNorm and attention act per image, so an image's output does not depend on its batch mates.
    net = small_net(label_dim=10).eval()
    x, c_noise, labels = torch.randn(4, 1, 8, 8), torch.randn(4), torch.eye(10)[[1, 2, 3, 4]]
    full = net(x, c_noise, class_labels=labels)
    part = net(x[:2], c_noise[:2], class_labels=labels[:2])
    torch.testing.assert_close(full[:2], part, rtol=1e-4, atol=1e-4 * float(full.detach().abs().max()))


def test_one_training_step_reaches_every_parameter():
    net = small_net("ncsnpp", 16, label_dim=10, augment_dim=9, attn_resolutions=(16, 8), decoder_type="skip")
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(4, 1, 16, 16)
    kw = dict(class_labels=torch.eye(10)[:4], augment_labels=torch.randn(4, 9))
    loss = (net(x, torch.randn(4), **kw) - x).square().mean()
    loss.backward()
    # The layers closing each branch start at gain 1e-5, not exactly 0, so no gradient is zero at init.
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, name
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    opt.step()
    assert all(not torch.equal(before[name], p) for name, p in net.named_parameters())
    assert (net(x, torch.randn(4), **kw) - x).square().mean() < loss


def test_weight_initialisation():
    net = small_net("ddpmpp", 16, label_dim=10, augment_dim=9, attn_resolutions=(16,))
    gains = {}
    for name, module in net.named_modules():
        if isinstance(module, (Linear, Conv2d)):
            receptive = module.weight[0, 0].numel()  # k * k for a convolution, 1 for a linear layer
            fan_in, fan_out = module.weight.shape[1] * receptive, module.weight.shape[0] * receptive
            bound = math.sqrt(6 / (fan_in + fan_out))
            gain = float(module.weight.detach().abs().max()) / bound
            assert 0.5 < gain / round_gain(gain) <= 1.0, name  # U(-g a, g a) with a the Xavier bound
            gains[name] = round_gain(gain)
            if module.bias is not None:
                assert not module.bias.any(), name
    last = [n for n in gains if n.endswith(("conv1", "proj")) or n.startswith("out_heads")]
    assert last and all(gains[n] == GAIN_LAST for n in last)
    assert all(gains[n] == GAIN_ATTN for n in gains if n.endswith("qkv"))
    assert all(g == 1.0 for n, g in gains.items() if n not in last and not n.endswith("qkv"))
    for module in net.modules():
        if isinstance(module, torch.nn.GroupNorm):
            assert module.num_groups == min(32, module.num_channels // 4) and module.eps == 1e-6
            assert (module.weight == 1).all() and not module.bias.any()


def round_gain(gain):
    """The nearest of the three gains the architecture uses."""
    return min((GAIN_LAST, GAIN_ATTN, 1.0), key=lambda g: abs(math.log(gain / g)))


def test_positional_embedding_frequencies():
    emb = PositionalEmbedding(128)
    assert emb.freqs[0] == 1 and math.isclose(float(emb.freqs[-1]), 1e-4, rel_tol=1e-5)
    out = emb(torch.tensor([0.0, 2.0]))
    torch.testing.assert_close(out[0], torch.cat([torch.zeros(64), torch.ones(64)]))
    torch.testing.assert_close(out[1, :64] ** 2 + out[1, 64:] ** 2, torch.ones(64))


@pytest.mark.parametrize("fir", [(1, 1), (1, 3, 3, 1)])
def test_resample_shapes_and_constants(fir):
    x = torch.full((1, 2, 8, 8), 3.0)
    up, down = Resample(2, "up", fir)(x), Resample(2, "down", fir)(x)
    assert up.shape == (1, 2, 16, 16) and down.shape == (1, 2, 4, 4)
    # Away from the zero-padded border a constant image stays constant.
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.full_like(up[..., 2:-2, 2:-2], 3.0))
    torch.testing.assert_close(down[..., 1:-1, 1:-1], torch.full_like(down[..., 1:-1, 1:-1], 3.0))


def test_box_filter_is_average_pool_and_nearest_upsampling():
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(Resample(3, "down", (1, 1))(x), F.avg_pool2d(x, 2))
    torch.testing.assert_close(Resample(3, "up", (1, 1))(x), F.interpolate(x, scale_factor=2, mode="nearest"))


def test_state_dict_round_trip():
    a, b = small_net("ncsnpp", seed=0), small_net("ncsnpp", seed=1)
    state = a.state_dict()
    assert "map_noise.freqs" in state  # the Fourier frequencies are part of the model
    assert not any("kernel" in key for key in state)  # FIR filters are rebuilt from the config
    b.load_state_dict(state)
    x, c_noise = torch.randn(2, 1, 8, 8), torch.randn(2)
    torch.testing.assert_close(a.eval()(x, c_noise), b.eval()(x, c_noise), rtol=0, atol=0)


def test_config_lists_from_json_are_accepted():
    net = build("ddpmpp", 8, 1, channel_mult=[1, 2], model_channels=16, num_blocks=1, attn_resolutions=[4])
    assert net(torch.randn(1, 1, 8, 8), torch.zeros(1)).shape == (1, 1, 8, 8)


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        (("unet", 8, 1), {}, "unknown network architecture 'unet'"),
        (("ddpmpp", 8, 1), {"num_block": 2}, "unknown network option"),
        (("ddpmpp", 8, 1), {"embedding_type": "learned"}, "embedding_type must be one of"),
        (("ncsnpp", 8, 1), {"encoder_type": "dense"}, "encoder_type must be one of"),
        (("ddpmpp", 8, 1), {"decoder_type": "residual"}, "decoder_type must be one of"),
        (("ddpmpp", 30, 1), {"channel_mult": (1, 2, 2)}, "must be divisible by 2"),
        (("ddpmpp", 8, 1), {"channel_mult": ()}, "channel_mult must be"),
        (("ddpmpp", 8, 1), {"model_channels": 18}, "GroupNorm over 18 channels"),
        (("ddpmpp", 8, 1), {"dropout": 1.0}, "dropout"),
        (("ddpmpp", 8, 1), {"num_blocks": 0}, "num_blocks"),
    ],
)
def test_bad_configuration_is_a_clear_error(args, kwargs, message):
    with pytest.raises(ValueError, match=message), torch.device("meta"):
        build(*args, **kwargs)


def test_labels_for_a_network_without_them_are_an_error():
    net = small_net()
    x = torch.randn(1, 1, 8, 8)
    with pytest.raises(ValueError, match="unconditional"):
        net(x, torch.zeros(1), class_labels=torch.eye(10)[:1])
    with pytest.raises(ValueError, match="augment_dim=0"):
        net(x, torch.zeros(1), augment_labels=torch.zeros(1, 9))


def test_training_pass_is_reproducible_under_deterministic_algorithms():
    # Training runs with torch.use_deterministic_algorithms(True) and must repeat bit for bit on the CPU.
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        grads = []
        for _ in range(2):
            net = small_net("ncsnpp", 16, label_dim=10, attn_resolutions=(16, 8), label_dropout=0.3)
            torch.manual_seed(5)  # dropout and label dropout draw from the global generator
            x = torch.randn(3, 1, 16, 16)
            net(x, torch.randn(3), class_labels=torch.eye(10)[:3]).square().sum().backward()
            grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
        torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)
    finally:
        torch.use_deterministic_algorithms(previous)
