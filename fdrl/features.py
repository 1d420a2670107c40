"""Feature extractors of the FID backends, and where their weights come from
(docs/design.md#evaluation).

- `pytorch-fid`: `pytorch_fid.inception.InceptionV3([3])`, pool3 (2048-d); images in [0, 1],
  resized to 299 inside the network (bilinear), as `python -m pytorch_fid` does for PNG folders.
- `clean-fid` (mode clean): clean-fid's own resizer for mode clean (`build_resizer("clean")`:
  PIL bicubic on float32 channels) and its TorchScript Inception (`InceptionV3W(dir,
  download=False)`), as `cleanfid.fid.compute_fid(mode="clean")` does.
- `classifier`: the penultimate layer of the digits classifier (`fdrl.classifier`).

Compute nodes have no internet, so nothing here downloads: weights come from an explicit
`--weights` (the file, or a folder holding it under the library's file name), else from the
library's own cache location. `fdrl fetch-weights` stages both Inception files on a machine that
has internet. For tests and the smoke scale, `write_random_weights` writes seeded random
Inception weights under the same names, marked so that every result computed with them says
"RANDOM weights" and never passes for an Inception FID.
"""

from __future__ import annotations

import json
import os
import platform
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from unittest import mock

import numpy as np
import torch
from torch import Tensor, nn

from fdrl.errors import FdrlError
from fdrl.io import atomic_path, sha256

PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"  # torch.hub name: SHA-256 prefix 6726825d
CLEAN_FID_FILE = "inception-2015-12-05.pt"
WEIGHT_FILES = {"pytorch-fid": PYTORCH_FID_FILE, "clean-fid": CLEAN_FID_FILE}
RANDOM_KEY = "fdrl_random_seed"  # state-dict key (pytorch-fid) / TorchScript extra file (clean-fid)


@dataclass
class Extractor:
    """A backend's feature map from uint8 images (B, C, H, W) to float features (B, dim), and
    what names it in every output: backend, extractor name, weights file and SHA-256."""

    backend: str
    name: str
    dim: int
    weights: Path
    weights_sha256: str
    weights_kind: str  # "published", "unverified", "random", or "trained here"
    fn: Callable[[Tensor], Tensor]
    model: nn.Module  # the library's network, as the library builds it
    details: dict = field(default_factory=dict)

    def __call__(self, images: Tensor) -> Tensor:
        with torch.no_grad():
            return self.fn(images)

    def describe(self) -> dict:
        return {"backend": self.backend, "feature_extractor": self.name, "feature_dim": self.dim,
                "weights": str(self.weights), "weights_sha256": self.weights_sha256,
                "weights_kind": self.weights_kind, **self.details}


def cache_dir(backend: str) -> Path:
    """Where the library itself keeps (and, online, downloads) its Inception weights."""
    if backend == "pytorch-fid":
        return Path(torch.hub.get_dir()) / "checkpoints"  # $TORCH_HOME/hub, else ~/.cache/torch/hub
    return Path("./" if platform.system() == "Windows" else "/tmp")  # cleanfid.features, hard-coded


def resolve_weights(backend: str, weights: str | os.PathLike | None) -> Path:
    """The weights file to load: `weights` (a file, or a folder holding the library's file name),
    else the library's cache. Missing: an error naming every place looked and the way out."""
    if backend == "classifier":
        if weights is None or not Path(weights).is_file():
            where = "no --weights was given" if weights is None else f"{weights} does not exist"
            raise FdrlError(f"the classifier backend needs the digits classifier's file ({where}); "
                            "make it with `fdrl train-classifier --out classifier.pt` and pass "
                            "--weights classifier.pt")
        return Path(weights)
    name = WEIGHT_FILES[backend]
    if weights is not None:
        weights = Path(weights)
        looked = [weights / name] if weights.is_dir() else [weights]
    else:
        looked = [cache_dir(backend) / name]
    for path in looked:
        if path.is_file():
            return path
    origin = "the given --weights" if weights is not None else f"{backend}'s cache"
    raise FdrlError(
        f"the {backend} Inception weights ({name}) are not in {origin}; looked at: "
        f"{', '.join(map(str, looked))}. Compute nodes have no internet: on a machine that has, "
        f"run `fdrl fetch-weights --to DIR`, copy DIR here and pass --weights DIR (or put the "
        f"file in {cache_dir(backend)})")


def _random_seed_of(path: Path, backend: str) -> int | None:
    """The seed of weights `write_random_weights` made, else None."""
    try:
        if backend == "clean-fid":
            with zipfile.ZipFile(path) as z:
                hits = [n for n in z.namelist() if n.endswith(f"extra/{RANDOM_KEY}.json")]
                return json.loads(z.read(hits[0]))["seed"] if hits else None
        sd = torch.load(path, map_location="cpu", weights_only=True)
        return int(sd[RANDOM_KEY]) if RANDOM_KEY in sd else None
    except Exception as err:  # not a zip / not a state dict: the wrong file under the right name
        raise FdrlError(f"{path} is not {backend}'s Inception weights file ({err!r:.200}); "
                        "fetch it again with `fdrl fetch-weights --to DIR`") from None


def _kind_and_name(backend: str, path: Path, digest: str, base: str) -> tuple[str, str]:
    seed = _random_seed_of(path, backend)
    if seed is not None:
        return "random", f"{base} [RANDOM weights, seed {seed}: plumbing only, not an Inception FID]"
    if backend == "pytorch-fid":  # torch.hub names a file by the prefix of its SHA-256
        return ("published" if digest.startswith("6726825d") else "unverified"), base
    return "unverified", base  # clean-fid publishes no checksum; the SHA-256 is recorded


def _pytorch_fid(path: Path, device: torch.device) -> tuple[Callable, nn.Module, str, dict]:
    import pytorch_fid
    from pytorch_fid import inception

    def load_state_dict(url: str, *args, **kwargs) -> dict:
        # pytorch-fid always asks torch.hub for FID_WEIGHTS_URL; answering with the resolved
        # file means the weights we hash are the weights we use, and nothing is downloaded.
        sd = torch.load(path, map_location="cpu", weights_only=True)
        sd.pop(RANDOM_KEY, None)
        return sd

    with mock.patch.object(inception, "load_state_dict_from_url", load_state_dict):
        model = inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval().to(device)

    def fn(images: Tensor) -> Tensor:
        x = images.to(device).float() / 255  # ToTensor() of a PNG, as pytorch-fid reads them
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x  # PIL's convert("RGB")
        return model(x)[0].flatten(1)  # resized to 299 and scaled to [-1, 1] inside

    return fn, model, "pytorch-fid InceptionV3 pool3 (2048-d)", {
        "library": f"pytorch-fid {pytorch_fid.__version__}"}


def _clean_fid(path: Path, device: torch.device) -> tuple[Callable, nn.Module, str, dict]:
    from importlib.metadata import version

    from cleanfid.inception_torchscript import InceptionV3W
    from cleanfid.resize import build_resizer

    folder = path.parent
    if path.name != CLEAN_FID_FILE:  # InceptionV3W takes a folder and appends its file name
        raise FdrlError(f"clean-fid loads its weights by file name: rename {path} to {CLEAN_FID_FILE} "
                        "(or pass the folder that holds it)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        model = InceptionV3W(str(folder), download=False, resize_inside=False).eval().to(device)
    resize = build_resizer("clean")

    def fn(images: Tensor) -> Tensor:
        hwc = images.permute(0, 2, 3, 1).cpu().numpy()
        hwc = np.repeat(hwc, 3, axis=3) if hwc.shape[3] == 1 else hwc  # PIL's convert("RGB")
        x = np.stack([resize(img) for img in hwc])  # float32 (B, 299, 299, 3) in [0, 255]
        return model(torch.from_numpy(x).permute(0, 3, 1, 2).to(device))

    return fn, model, "clean-fid InceptionV3W TorchScript (2048-d), mode clean", {
        "mode": "clean", "library": f"clean-fid {version('clean-fid')}"}


def load_extractor(backend: str, weights: str | os.PathLike | None = None,
                   device: torch.device | str = "cpu") -> Extractor:
    """The backend's feature extractor on `device`, its weights resolved as `resolve_weights`."""
    device = torch.device(device)
    path = resolve_weights(backend, weights)
    digest = sha256(path)
    if backend == "classifier":
        from fdrl.classifier import IMAGE_SHAPE, load_classifier, preprocess

        model, config = load_classifier(path)
        model = model.to(device)

        def fn(images: Tensor) -> Tensor:
            if tuple(images.shape[1:]) != IMAGE_SHAPE:
                raise FdrlError(f"the digits classifier takes {IMAGE_SHAPE} images, not "
                                f"{tuple(images.shape[1:])}; use an Inception backend")
            return model.features(preprocess(images.to(device)))

        return Extractor(backend, f"classifier {config['arch']} penultimate ({config['feature_dim']}-d)",
                         config["feature_dim"], path, digest, "trained here", fn, model,
                         {"classifier_test_accuracy": config["test_accuracy"]})
    make = {"pytorch-fid": _pytorch_fid, "clean-fid": _clean_fid}[backend]
    fn, model, base, details = make(path, device)
    kind, name = _kind_and_name(backend, path, digest, base)
    return Extractor(backend, name, 2048, path, digest, kind, fn, model, details)


# --- weights: the real files (online) and seeded random stand-ins (tests, smoke scale) ---------

def fetch_weights(to: str | os.PathLike) -> list[Path]:
    """Downloads both Inception files into `to` under the names the libraries expect."""
    from cleanfid.downloads_helper import inception_url
    from pytorch_fid.inception import FID_WEIGHTS_URL

    to = Path(to)
    to.mkdir(parents=True, exist_ok=True)
    paths = []
    for url, name, prefix in ((FID_WEIGHTS_URL, PYTORCH_FID_FILE, "6726825d"),
                              (inception_url, CLEAN_FID_FILE, None)):
        path = to / name
        if not path.is_file():
            try:  # writes to a temporary file and renames it; checks the hash prefix if known
                torch.hub.download_url_to_file(url, str(path), hash_prefix=prefix)
            except (OSError, RuntimeError) as err:
                raise FdrlError(f"could not download {url} ({err}); run `fdrl fetch-weights` on a "
                                "machine with internet (a login node), then copy the folder to "
                                "the compute nodes and pass it as --weights") from None
        paths.append(path)
    return paths


def _random_inception(seed: int) -> dict:
    """A seeded state dict of pytorch-fid's FID Inception (the FID blocks only change forward,
    so torchvision's Inception has the same keys and shapes). He-initialized convolutions keep
    the features O(0.1) (torchvision's own init makes them ~1e10)."""
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008,
                                              init_weights=False)
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return net.state_dict()


class _TorchScriptInception(nn.Module):
    """The interface of NVIDIA's `inception-2015-12-05.pt` that InceptionV3W uses: `layers` maps
    (B, 3, 299, 299) in [-1, 1] to 2048 features; `forward(img, return_features)` resizes first."""

    def __init__(self, layers: nn.Module):
        super().__init__()
        self.layers = layers

    def forward(self, img: Tensor, return_features: bool = False) -> Tensor:
        x = nn.functional.interpolate(img, size=(299, 299), mode="bilinear", align_corners=False)
        return self.layers((x - 128) / 128)


def write_random_weights(to: str | os.PathLike, seed: int = 0) -> list[Path]:
    """Seeded random Inception weights for both libraries, under their file names in `to`,
    marked as random (and so named in every result). For tests and the smoke scale only."""
    from pytorch_fid import inception

    to = Path(to)
    sd = _random_inception(seed)
    with atomic_path(to / PYTORCH_FID_FILE) as tmp:
        torch.save({**sd, RANDOM_KEY: torch.tensor(seed)}, tmp)
    # clean-fid's file is TorchScript: script pytorch-fid's Inception blocks with the same weights.
    with mock.patch.object(inception, "load_state_dict_from_url", lambda *a, **k: sd):
        blocks = inception.InceptionV3([3]).blocks
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notices
        scripted = torch.jit.script(_TorchScriptInception(nn.Sequential(*blocks, nn.Flatten())).eval())
        with atomic_path(to / CLEAN_FID_FILE) as tmp:
            marker = {f"{RANDOM_KEY}.json": json.dumps({"seed": seed})}
            torch.jit.save(scripted, str(tmp), _extra_files=marker)
    return [to / PYTORCH_FID_FILE, to / CLEAN_FID_FILE]
