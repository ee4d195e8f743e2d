"""Feature extractors for FID and KID: clean-fid's TorchScript Inception-v3 and the digits feature network.

Every extractor maps uint8 images ``[N, H, W, C]`` (the sample-file layout, C = 1 or 3) to float32
features ``[N, D]``. Inception goes through clean-fid's own pieces: its ``InceptionV3W`` wrapper
around ``inception-2015-12-05.pt``, its resizer per mode and its batch feature call. The modes:

- ``clean``: PIL bicubic resize to 299x299 in float before the network (clean-fid's default);
- ``legacy_tensorflow``: native-resolution images, resized inside the network as TensorFlow did; this is
  the mode comparable with EDM's ``fid.py``, hence with the paper's numbers (docs/paper.md section 4).

The weights file is looked up in one folder (``$FDM_INCEPTION_DIR``, else ``$XDG_CACHE_HOME/fdm``, else
``~/.cache/fdm``), never downloaded on the fly: ``fetch_inception`` (``fdm fetch-inception``) is the only
downloader. The digits feature network (``fdm.metrics.featnet``) scores digits offline at native size.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fdm.atomic import give_plain_mode
from fdm.digest import file_sha256
from fdm.errors import FdmError
from fdm.names import DIGITSNET_MODE, EXTRACTORS, INCEPTION_MODES
from fdm.paths import DIGITSNET_FILE, INCEPTION_FILE

INCEPTION_URL = f"https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/{INCEPTION_FILE}"


def inception_dir() -> Path:
    """The folder holding ``inception-2015-12-05.pt``: $FDM_INCEPTION_DIR, else the user's cache."""
    if os.environ.get("FDM_INCEPTION_DIR"):
        return Path(os.environ["FDM_INCEPTION_DIR"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "fdm"


def inception_path(folder: str | os.PathLike | None = None) -> Path:
    """Path of the Inception weights in ``folder``; a clear error if the file is not there."""
    folder = Path(folder) if folder is not None else inception_dir()
    path = folder / INCEPTION_FILE
    if not path.is_file():
        raise FdmError(
            f"Inception weights {INCEPTION_FILE} not found in {folder}: run `fdm fetch-inception` "
            f"or download {INCEPTION_URL} into that folder (or set FDM_INCEPTION_DIR)"
        )
    return path


@contextlib.contextmanager
def quiet_torchscript() -> Iterator[None]:
    """Silence torch's notice that TorchScript is deprecated: the Inception weights exist only as TorchScript."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        yield


def weights_sha256(module: torch.nn.Module) -> str:
    """sha256 of a module's tensors (names, dtypes, shapes, values), independent of how it was saved.

    TorchScript archives carry a random serialization id, so their file bytes differ between two saves
    of the same network; this digest does not.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def fetch_inception(
    folder: str | os.PathLike | None = None, url: str = INCEPTION_URL, progress: bool = True
) -> Path:
    """Download the Inception weights into ``folder`` unless present; the only stage that downloads.

    The body goes to a temporary name beside the target and is renamed only when its size equals the
    server's Content-Length, so an interrupted download never looks finished.
    """
    folder = Path(folder) if folder is not None else inception_dir()
    dest = folder / INCEPTION_FILE
    if dest.is_file():
        return dest
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{INCEPTION_FILE}.", suffix=".part", dir=folder)
    except OSError as err:
        raise FdmError(f"cannot write the Inception weights into {folder}: {err}") from None
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            expected = response.headers.get("Content-Length")
            if expected is None:
                raise FdmError(f"{url} sent no Content-Length, so the download cannot be size-checked")
            expected = int(expected)
            received = 0
            with tqdm(
                total=expected, unit="B", unit_scale=True, desc=INCEPTION_FILE, disable=not progress
            ) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if received != expected:
            raise FdmError(f"download of {url} stopped at {received} of {expected} bytes; nothing was saved")
        give_plain_mode(tmp)
        os.replace(tmp, dest)
    except (urllib.error.URLError, HTTPException, OSError) as err:
        raise FdmError(
            f"could not download {url} ({err}); place {INCEPTION_FILE} in {folder} by hand"
        ) from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest


@dataclass(frozen=True)
class FeatureExtractor:
    """A named feature map from uint8 images ``[N, H, W, C]`` to float32 features ``[N, D]``.

    ``name`` and ``mode`` name the metric (``fid_inception_clean``); ``weights_sha256`` identifies the
    network file, so reference statistics can be matched to the exact extractor that made them.
    """

    name: str
    mode: str
    weights_sha256: str
    embed: Callable[[np.ndarray], np.ndarray]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if images.dtype != np.uint8 or images.ndim != 4:
            raise FdmError(f"images must be uint8 [N, H, W, C], got {images.dtype} {list(images.shape)}")
        return self.embed(images).astype(np.float32, copy=False)


def build_extractor(
    name: str,
    mode: str | None = None,
    device: str | torch.device = "cpu",
    featnet: str | os.PathLike | None = None,
    inception_folder: str | os.PathLike | None = None,
) -> FeatureExtractor:
    """The extractor ``name`` (inception or digitsnet) in ``mode`` on ``device``.

    Inception needs ``mode`` in clean/legacy_tensorflow and reads its weights from ``inception_folder``
    (default ``inception_dir()``); digitsnet needs ``featnet``, the TorchScript file of ``fdm featnet``.
    """
    device = torch.device(device)
    if name == "inception":
        if mode not in INCEPTION_MODES:
            raise FdmError(f"Inception mode must be one of {', '.join(INCEPTION_MODES)}, got {mode!r}")
        return _inception(mode, device, inception_path(inception_folder))
    if name == "digitsnet":
        if mode not in (None, DIGITSNET_MODE):
            raise FdmError(f"the digits network has one mode, {DIGITSNET_MODE!r}, got {mode!r}")
        if featnet is None:
            raise FdmError(
                "the digitsnet extractor needs the feature network file (--featnet, from `fdm featnet`)"
            )
        return _digitsnet(Path(featnet), device)
    raise FdmError(f"unknown feature extractor {name!r}; expected one of {', '.join(EXTRACTORS)}")


def open_network(
    extractor: str, mode: str, folder: str | os.PathLike, device: str | torch.device = "cpu"
) -> FeatureExtractor:
    """The extractor ``extractor`` in ``mode`` from the pipeline's network folder (``fdm.paths.network``)."""
    if extractor == "digitsnet":
        return build_extractor(extractor, mode, device, featnet=Path(folder) / DIGITSNET_FILE)
    return build_extractor(extractor, mode, device, inception_folder=folder)


def _inception(mode: str, device: torch.device, path: Path) -> FeatureExtractor:
    """clean-fid's Inception pipeline: its resizer for ``mode``, then its TorchScript wrapper."""
    from cleanfid.fid import get_batch_features
    from cleanfid.inception_torchscript import InceptionV3W
    from cleanfid.resize import build_resizer

    try:
        with quiet_torchscript():
            model = InceptionV3W(str(path.parent), download=False, resize_inside=mode == "legacy_tensorflow")
    except (RuntimeError, ValueError) as err:
        raise FdmError(
            f"{path} is not a readable TorchScript file ({str(err).splitlines()[0]}); delete it and run "
            "`fdm fetch-inception` again"
        ) from None
    model = model.to(device).eval()
    resize = build_resizer(mode)

    def embed(images: np.ndarray) -> np.ndarray:
        channels = images.shape[-1]
        if channels not in (1, 3):
            raise FdmError(f"Inception takes 1- or 3-channel images, got {channels} channels")
        if channels == 1:
            images = np.repeat(images, 3, axis=-1)  # Grey to RGB, as PIL's convert("RGB") in clean-fid.
        batch = [torch.from_numpy(np.asarray(resize(image), dtype=np.float32)) for image in images]
        return get_batch_features(torch.stack(batch).permute(0, 3, 1, 2), model, device)

    return FeatureExtractor("inception", mode, file_sha256(path), embed)


def _digitsnet(path: Path, device: torch.device) -> FeatureExtractor:
    """The digits feature network: native-resolution images in [0, 255] to its penultimate features.

    Run as clean-fid's ``get_batch_features`` runs a network (no_grad, to the device, back as numpy),
    without importing clean-fid, which pulls in torchvision: digits scoring never needs Inception.
    """
    if not path.is_file():
        raise FdmError(f"digits feature network {path} does not exist: run `fdm featnet` first")
    try:
        with quiet_torchscript():
            model = torch.jit.load(str(path), map_location=device).eval()
        shape = (int(model.img_resolution), int(model.img_resolution), int(model.img_channels))
    except (RuntimeError, ValueError, AttributeError) as err:
        raise FdmError(f"{path} is not a digits feature network written by `fdm featnet` ({err})") from None

    def embed(images: np.ndarray) -> np.ndarray:
        if tuple(images.shape[1:]) != shape:
            raise FdmError(
                f"the digits network takes images [N, {', '.join(map(str, shape))}], got {list(images.shape)}"
            )
        batch = torch.from_numpy(images).permute(0, 3, 1, 2).float()
        with torch.no_grad():
            return model(batch.to(device)).cpu().numpy()

    return FeatureExtractor("digitsnet", DIGITSNET_MODE, weights_sha256(model), embed)
