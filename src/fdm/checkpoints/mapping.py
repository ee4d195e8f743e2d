"""The one mapping between the authors' SongUNet state dict and ours, in both directions.

The authors' SongUNet is ``training/networks.py`` of EDM (https://github.com/NVlabs/edm) and, unchanged,
of FDM (https://github.com/sail-sg/FDM); ours is ``fdm.nets.SongUNet``. ``MODULES`` and ``FILTERS`` below
are the table of docs/networks.md ("The authors' state dict"). Names are formatted in one direction only,
ours -> theirs, from a network of ours; the importer inverts that dictionary, so a name the table does
not produce for the network the options describe is refused rather than guessed.

- ``to_theirs(net)``: ``net``'s weights as their ``SongUNet.state_dict()``, FIR filter buffers included
  (their ``load_state_dict(strict=True)`` takes it; the cross-check loads our weights into their code so).
- ``to_ours(tensors, net)``: their tensors as ``net.state_dict()`` (``fdm import-checkpoint``), with
  one-line ``FdmError``s for a name, shape or filter that does not fit.
- ``their_names(net)`` and ``to_our_layout``: per tensor, e.g. to bring their gradients back to ours.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from fdm.errors import FdmError
from fdm.nets.layers import Resample

# Our module -> theirs (under the preconditioner's ``model.``), and the level of the modules whose names
# do not carry it (-1: the lowest). {l} is the level, at resolution r = img_resolution / 2^l; {p} = l - 1
# indexes our lists that start at the second level; {i} is a block index.
MODULES = (
    ("map_noise", "map_noise", None),  # NCSN++: the Fourier frequencies ``freqs``
    ("map_label", "map_label", None),
    ("map_augment", "map_augment", None),
    ("map_layer0", "map_layer0", None),
    ("map_layer1", "map_layer1", None),
    ("stem", "enc.{r}x{r}_conv", 0),
    ("enc_down.{p}", "enc.{r}x{r}_down", None),
    ("enc_blocks.{l}.{i}", "enc.{r}x{r}_block{i}", None),
    ("enc_aux.{p}", "enc.{r}x{r}_aux_skip", None),  # "skip" encoder: a 1x1 conv of the image
    ("enc_aux.{p}.0", "enc.{r}x{r}_aux_residual", None),  # "residual" encoder: the 3x3 conv
    ("dec_mid.{i}", "dec.{r}x{r}_in{i}", -1),
    ("dec_up.{l}", "dec.{r}x{r}_up", None),
    ("dec_blocks.{l}.{i}", "dec.{r}x{r}_block{i}", None),
    ("out_heads.{l}.0", "dec.{r}x{r}_aux_norm", None),
    ("out_heads.{l}.2", "dec.{r}x{r}_aux_conv", None),
)
# Our ``Resample`` modules (the FIR filter in a non-persistent ``kernel``, x4 when upsampling) -> their
# resampling convolutions, each holding outer(f, f) / sum(f)^2 as the buffer ``resample_filter``.
FILTERS = (
    ("enc_down.{p}.resample", ("enc.{r}x{r}_down.conv0", "enc.{r}x{r}_down.skip")),
    ("enc_aux_down.{p}", ("enc.{r}x{r}_aux_down",)),  # "skip" encoder: a weightless conv
    ("enc_aux.{p}.1", ("enc.{r}x{r}_aux_residual",)),  # "residual" encoder: fused with its 3x3 conv
    ("dec_up.{l}.resample", ("dec.{r}x{r}_up.conv0", "dec.{r}x{r}_up.skip")),
    ("out_up.{l}", ("dec.{r}x{r}_aux_up",)),  # "skip" decoder: a weightless conv
)
_FILTER = "resample_filter"
_ATTENTION_LINEAR = ("qkv.weight", "proj.weight")  # 1x1 convolutions there
_INTERLEAVED = ("qkv.weight", "qkv.bias")


def _pattern(template: str, tail: str) -> re.Pattern:
    """``template`` as a regular expression whose {l}, {p}, {i} match numbers, followed by ``tail``."""
    return re.compile(re.sub(r"\\\{(\w)\\\}", r"(?P<\1>\\d+)", re.escape(template)) + tail)


# A parameter's name after its module starts with a letter: enc_aux.0.weight is the skip encoder's conv,
# enc_aux.0.0.weight the residual encoder's.
_MODULE_PATTERNS = [
    (_pattern(ours, r"\.(?P<leaf>[A-Za-z_][\w.]*)"), theirs, at) for ours, theirs, at in MODULES
]
_FILTER_PATTERNS = [(_pattern(ours, ""), theirs) for ours, theirs in FILTERS]


def _format(template: str, fields: dict, img_resolution: int, levels: int, at: int | None) -> str:
    if at is not None:
        level = at % levels
    elif "l" in fields:
        level = int(fields["l"])
    elif "p" in fields:
        level = int(fields["p"]) + 1
    else:  # the mapping network: no resolution in the name
        level = 0
    return template.format(r=img_resolution >> level, i=fields.get("i"))


def their_names(net: nn.Module) -> dict[str, str]:
    """Our state-dict name -> theirs (relative to their SongUNet), for every entry of ``net.state_dict()``."""
    res, levels, names = net.img_resolution, len(net.enc_blocks), {}
    for name in net.state_dict():
        for pattern, theirs, at in _MODULE_PATTERNS:
            match = pattern.fullmatch(name)
            if match:
                fields = match.groupdict()
                names[name] = _format(theirs, fields, res, levels, at) + "." + fields["leaf"]
                break
        else:
            raise KeyError(f"{name} is in no row of fdm.checkpoints.mapping.MODULES")
    return names


def their_filters(net: nn.Module) -> dict[str, Resample]:
    """Their ``resample_filter`` buffers -> the ``Resample`` module of ``net`` that applies that filter."""
    res, levels, filters = net.img_resolution, len(net.enc_blocks), {}
    for name, module in net.named_modules():
        if not isinstance(module, Resample):
            continue
        for pattern, theirs in _FILTER_PATTERNS:
            match = pattern.fullmatch(name)
            if match:
                for conv in theirs:
                    filters[f"{_format(conv, match.groupdict(), res, levels, None)}.{_FILTER}"] = module
                break
        else:
            raise KeyError(f"{name} is in no row of fdm.checkpoints.mapping.FILTERS")
    return filters


def fir_buffer(module: Resample) -> torch.Tensor:
    """Their buffer for the filter of ``module``: outer(f, f) / sum(f)^2, [1, 1, k, k], without the x4."""
    return module.kernel[:1] / (4 if module.direction == "up" else 1)


def to_their_layout(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """Our tensor ``name`` as theirs: q/k/v rows interleaved channel by channel, 1x1 kernels added."""
    if name.endswith(_INTERLEAVED):
        # Our row j C + c (block j of q, k, v) is their row 3 c + j.
        channels = tensor.shape[0] // 3
        tensor = tensor.reshape(3, channels, *tensor.shape[1:]).transpose(0, 1).reshape(tensor.shape)
    if name.endswith(_ATTENTION_LINEAR):
        tensor = tensor[:, :, None, None]
    return tensor.contiguous()


def to_our_layout(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """The inverse of ``to_their_layout``; a tensor of another shape is passed on for the shape check."""
    if name.endswith(_ATTENTION_LINEAR) and tensor.ndim == 4 and tensor.shape[2:] == (1, 1):
        tensor = tensor.flatten(1)
    if name.endswith(_INTERLEAVED) and tensor.shape[0] % 3 == 0:
        channels = tensor.shape[0] // 3
        tensor = tensor.reshape(channels, 3, *tensor.shape[1:]).transpose(0, 1).reshape(tensor.shape)
    return tensor.contiguous()


def to_theirs(net: nn.Module) -> dict[str, torch.Tensor]:
    """``net``'s weights as the authors' SongUNet state dict of the same configuration."""
    names = their_names(net)
    state = {names[k]: to_their_layout(k, v) for k, v in net.state_dict().items()}
    state.update({name: fir_buffer(module) for name, module in their_filters(net).items()})
    return state


def to_ours(tensors: Mapping[str, torch.Tensor], net: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """The authors' SongUNet tensors as ``net.state_dict()`` (float32), for ``load_state_dict(strict=True)``.

    Every name must be one ``to_theirs(net)`` produces, of the shape it gives (checked before anything is
    converted or copied); their FIR filters must equal the ones ``net`` applies (then they are dropped: ours
    are rebuilt from the config). ``prefix`` is put before their names in the error messages.
    """
    ours_of = {theirs: ours for ours, theirs in their_names(net).items()}
    filters, expected = their_filters(net), net.state_dict()
    state, seen = {}, set()
    for name, tensor in tensors.items():
        where = prefix + name
        if name not in ours_of and name not in filters:
            raise FdmError(f"{where} has no counterpart in the network its options describe")
        if not tensor.is_floating_point():
            raise FdmError(f"{where} holds {tensor.dtype} values, not floating point")
        seen.add(name)
        if name in filters:
            fir = fir_buffer(filters[name])
            if tensor.shape != fir.shape or not torch.allclose(tensor.float(), fir):
                raise FdmError(f"{where} differs from the filter its resample_filter option implies")
            continue
        ours = ours_of[name]
        needed = expected[ours].shape + ((1, 1) if ours.endswith(_ATTENTION_LINEAR) else ())
        if tensor.shape != needed:  # before any conversion copies it
            raise FdmError(
                f"{where} has shape {list(tensor.shape)} where the network its options describe needs "
                f"{list(needed)} ({ours})"
            )
        state[ours] = to_our_layout(ours, tensor.float())
    missing = [ours for theirs, ours in ours_of.items() if theirs not in seen]
    missing += [prefix + theirs for theirs in filters if theirs not in seen]
    if missing:
        total = len(ours_of) + len(filters)
        raise FdmError(f"the pickle has no tensor for {missing[0]} ({len(missing)} of {total} missing)")
    return state
