"""Feature extractors of the FID backends, and where their weights come from
(docs/design.md#evaluation).

- `pytorch-fid`: `pytorch_fid.inception.InceptionV3([3])`, pool3 (2048-d) of the TF-FID
  Inception; images in [0, 1], resized to 299 inside the network (bilinear), as `python -m
  pytorch_fid` does for PNG folders.
- `torchvision-inception`: the authors' protocol. The same `InceptionV3([3])` built with
  `use_fid_inception=False`, i.e. over torchvision's ImageNet `inception_v3` weights, fed the
  same way (images in [0, 1], bilinear to 299, scaled to [-1, 1] inside).
- `clean-fid` (mode clean): clean-fid's own resizer for mode clean (`build_resizer("clean")`:
  PIL bicubic on float32 channels) and its TorchScript Inception (`InceptionV3W(dir,
  download=False)`), as `cleanfid.fid.compute_fid(mode="clean")` does.
- `classifier`: the penultimate layer of the digits classifier (`fdrl.classifier`).

Every backend computes its features in float32 by default, as the FID protocol does; a
`Precision` may run the network under bf16 autocast or channels-last instead (features are
returned as float32 either way, and every result records the precision).

Compute nodes have no internet, so nothing here downloads: weights come from an explicit
`--weights` (the file, or a folder holding it under the library's file name), else from the
library's own cache location. `fdrl fetch-weights` stages the three Inception files on a machine
that has internet. For tests and the smoke scale, `write_random_weights` writes seeded random
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
from typing import Callable, Sequence
from unittest import mock

import numpy as np
import torch
from torch import Tensor, nn

from fdrl.checkpoint import reason, save_tensors
from fdrl.errors import FdrlError
from fdrl.io import atomic_path, check_zip, sha256
from fdrl.names import FID_BACKENDS
from fdrl.precision import FP32, Precision

PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
CLEAN_FID_FILE = "inception-2015-12-05.pt"
TORCHVISION_FILE = "inception_v3_google-0cc3c7bd.pth"
WEIGHT_FILES = {"pytorch-fid": PYTORCH_FID_FILE, "clean-fid": CLEAN_FID_FILE,
                "torchvision-inception": TORCHVISION_FILE}
# torch.hub names a file by the prefix of its SHA-256; clean-fid publishes no checksum.
PUBLISHED_PREFIX = {"pytorch-fid": "6726825d", "torchvision-inception": "0cc3c7bd"}
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
    precision: Precision = FP32

    def __call__(self, images: Tensor) -> Tensor:
        device = next(self.model.parameters()).device
        with torch.no_grad(), self.precision.autocast(device):
            return self.fn(images).float()

    def describe(self) -> dict:
        return {"backend": self.backend, "feature_extractor": self.name, "feature_dim": self.dim,
                "weights": str(self.weights), "weights_sha256": self.weights_sha256,
                "weights_kind": self.weights_kind, **self.details, **self.precision.describe()}


def cache_dir(backend: str) -> Path:
    """Where the library itself keeps (and, online, downloads) its Inception weights."""
    if backend == "clean-fid":
        return Path("./" if platform.system() == "Windows" else "/tmp")  # cleanfid.features, hard-coded
    return Path(torch.hub.get_dir()) / "checkpoints"  # $TORCH_HOME/hub, else ~/.cache/torch/hub


def resolve_weights(backend: str, weights: str | os.PathLike | None) -> Path:
    """The weights file to load: `weights` (a file, or a folder holding the library's file name),
    else the library's cache. Missing: an error naming every place looked and the way out."""
    if backend == "classifier":
        if weights is None or not Path(weights).is_file():
            where = "no --weights was given" if weights is None else f"{weights} is not a file"
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


def weights_by_backend(backends: Sequence[str], given: Sequence[str] = ()) -> dict[str, Path | None]:
    """The weights of each backend from `--weights` values: `BACKEND=PATH` gives that backend's,
    a plain `PATH` (at most one) every other backend's; a backend given none loads from the
    library's cache (None)."""
    named, plain = {}, []
    for text in given:
        backend, sep, path = text.partition("=")
        if not (sep and backend in FID_BACKENDS):
            plain.append(Path(text))
        elif backend not in backends:
            raise FdrlError(f"--weights {text} names {backend}, which is not among --backend "
                            f"{' '.join(backends)}; drop it or add the backend")
        elif backend in named:
            raise FdrlError(f"--weights names {backend} twice; give each backend's weights once")
        else:
            named[backend] = Path(path)
    if len(plain) > 1:
        raise FdrlError(f"--weights takes at most one plain PATH (for every backend), got "
                        f"{len(plain)}; name each one's backend, as --weights BACKEND=PATH")
    return {backend: named.get(backend, plain[0] if plain else None) for backend in backends}


def _random_seed_of(path: Path, backend: str) -> int | None:
    """The seed of weights `write_random_weights` made, else None."""
    try:
        check_zip(path)
        if backend == "clean-fid":
            with zipfile.ZipFile(path) as z:
                hits = [n for n in z.namelist() if n.endswith(f"extra/{RANDOM_KEY}.json")]
                return json.loads(z.read(hits[0]))["seed"] if hits else None
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # the marker alone
        return int(sd[RANDOM_KEY]) if RANDOM_KEY in sd else None
    except Exception as err:  # not a zip / not a state dict: the wrong file under the right name
        raise _not_weights(path, backend, err) from None


def _not_weights(path: Path, backend: str, err: Exception) -> FdrlError:
    return FdrlError(f"{path} is not {backend}'s Inception weights file ({reason(err)}); fetch it "
                     "again with `fdrl fetch-weights --to DIR`")


def _kind_and_name(backend: str, seed: int | None, digest: str, base: str) -> tuple[str, str]:
    if seed is not None:
        return "random", f"{base} [RANDOM weights, seed {seed}: plumbing only, not an Inception FID]"
    prefix = PUBLISHED_PREFIX.get(backend)
    return ("published" if prefix and digest.startswith(prefix) else "unverified"), base


def _state_dict(path: Path) -> dict:
    """The state dict in a weights file (without the marker of random weights)."""
    sd = torch.load(path, map_location="cpu", weights_only=True)
    sd.pop(RANDOM_KEY, None)
    return sd


def _pool3(model: nn.Module, device: torch.device) -> Callable[[Tensor], Tensor]:
    """pytorch-fid's InceptionV3 fed as `python -m pytorch_fid` feeds it PNG files."""

    def fn(images: Tensor) -> Tensor:
        x = images.to(device).float() / 255  # ToTensor() of a PNG, as pytorch-fid reads them
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x  # PIL's convert("RGB")
        return model(x)[0].flatten(1)  # resized to 299 and scaled to [-1, 1] inside

    return fn


def _pytorch_fid(path: Path, device: torch.device) -> tuple[Callable, nn.Module, str, dict]:
    import pytorch_fid
    from pytorch_fid import inception

    # pytorch-fid always asks torch.hub for FID_WEIGHTS_URL; answering with the resolved file
    # means the weights we hash are the weights we use, and nothing is downloaded.
    with mock.patch.object(inception, "load_state_dict_from_url", lambda *a, **k: _state_dict(path)):
        model = inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval().to(device)
    return _pool3(model, device), model, "pytorch-fid InceptionV3 pool3 (2048-d)", {
        "library": f"pytorch-fid {pytorch_fid.__version__}"}


def _torchvision_inception(path: Path, device: torch.device) -> tuple[Callable, nn.Module, str, dict]:
    import pytorch_fid
    import torchvision
    from pytorch_fid import inception
    from torchvision.models import _api

    # torchvision's inception_v3(weights=DEFAULT) asks torch.hub for its URL: answered likewise.
    with mock.patch.object(_api, "load_state_dict_from_url", lambda *a, **k: _state_dict(path)):
        model = inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]],
                                      use_fid_inception=False).eval().to(device)
    return _pool3(model, device), model, (
        "torchvision ImageNet Inception-v3 pool3 (2048-d), pytorch-fid InceptionV3 with "
        "use_fid_inception=False: the authors' protocol"), {
        "library": f"pytorch-fid {pytorch_fid.__version__}, torchvision {torchvision.__version__}"}


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
                   device: torch.device | str = "cpu", precision: Precision = FP32) -> Extractor:
    """The backend's feature extractor on `device` in `precision`, its weights resolved as
    `resolve_weights`."""
    device = torch.device(device)
    path = resolve_weights(backend, weights)
    digest = sha256(path)
    if backend == "classifier":
        from fdrl.classifier import IMAGE_SHAPE, load_classifier, preprocess

        model, config = load_classifier(path)
        model = precision.prepare(model.to(device))

        def fn(images: Tensor) -> Tensor:
            if tuple(images.shape[1:]) != IMAGE_SHAPE:
                raise FdrlError(f"the digits classifier takes {IMAGE_SHAPE} images, not "
                                f"{tuple(images.shape[1:])}; use an Inception backend")
            return model.features(preprocess(images.to(device)))

        return Extractor(backend, f"classifier {config['arch']} penultimate ({config['feature_dim']}-d)",
                         config["feature_dim"], path, digest, "trained here", fn, model,
                         {"classifier_test_accuracy": config["test_accuracy"]}, precision)
    make = {"pytorch-fid": _pytorch_fid, "clean-fid": _clean_fid,
            "torchvision-inception": _torchvision_inception}[backend]
    seed = _random_seed_of(path, backend)  # first: it checks the file's CRCs
    try:
        fn, model, base, details = make(path, device)
    except FdrlError:
        raise
    except Exception as err:  # a state dict of other keys or shapes, a broken TorchScript file
        raise _not_weights(path, backend, err) from None
    kind, name = _kind_and_name(backend, seed, digest, base)
    return Extractor(backend, name, 2048, path, digest, kind, fn, precision.prepare(model), details,
                     precision)


# --- weights: the real files (online) and seeded random stand-ins (tests, smoke scale) ---------

def fetch_weights(to: str | os.PathLike) -> list[Path]:
    """Downloads the three Inception files into `to` under the names the libraries expect."""
    from cleanfid.downloads_helper import inception_url
    from pytorch_fid.inception import FID_WEIGHTS_URL
    from torchvision.models import Inception_V3_Weights

    to = Path(to)
    to.mkdir(parents=True, exist_ok=True)
    urls = {"pytorch-fid": FID_WEIGHTS_URL, "clean-fid": inception_url,
            "torchvision-inception": Inception_V3_Weights.IMAGENET1K_V1.url}
    paths = []
    for backend, url in urls.items():
        path, prefix = to / WEIGHT_FILES[backend], PUBLISHED_PREFIX.get(backend)
        if not path.is_file():
            try:  # writes to a temporary file and renames it; checks the hash prefix if known
                torch.hub.download_url_to_file(url, str(path), hash_prefix=prefix)
            except (OSError, RuntimeError) as err:
                raise FdrlError(f"could not download {url} ({err}); run `fdrl fetch-weights` on a "
                                "machine with internet (a login node), then copy the folder to "
                                "the compute nodes and pass it as --weights") from None
        paths.append(path)
    return paths


def _random_inception(seed: int, num_classes: int = 1008, aux_logits: bool = False) -> dict:
    """A seeded state dict of torchvision's Inception-v3: with 1008 classes it has the keys and
    shapes of pytorch-fid's FID Inception (the FID blocks only change forward); with 1000 classes
    and the auxiliary head, those of torchvision's ImageNet weights. He-initialized convolutions
    keep the features O(0.1) (torchvision's own init makes them ~1e10)."""
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = torchvision.models.inception_v3(weights=None, aux_logits=aux_logits,
                                              num_classes=num_classes, init_weights=False)
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
    """Seeded random Inception weights for the three backends, under their file names in `to`,
    marked as random (and so named in every result). For tests and the smoke scale only."""
    from pytorch_fid import inception

    to = Path(to)
    sd = _random_inception(seed)
    for name, weights in ((PYTORCH_FID_FILE, sd),
                          (TORCHVISION_FILE, _random_inception(seed, 1000, aux_logits=True))):
        save_tensors({**weights, RANDOM_KEY: torch.tensor(seed)}, to / name)
    # clean-fid's file is TorchScript: script pytorch-fid's Inception blocks with the same weights.
    with mock.patch.object(inception, "load_state_dict_from_url", lambda *a, **k: sd):
        blocks = inception.InceptionV3([3]).blocks
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notices
        scripted = torch.jit.script(_TorchScriptInception(nn.Sequential(*blocks, nn.Flatten())).eval())
        with atomic_path(to / CLEAN_FID_FILE) as tmp, open(tmp, "wb") as f:  # as save_tensors
            marker = {f"{RANDOM_KEY}.json": json.dumps({"seed": seed})}
            torch.jit.save(scripted, f, _extra_files=marker)
    return [to / WEIGHT_FILES[backend] for backend in WEIGHT_FILES]
