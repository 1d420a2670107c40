"""The datasets of the paper, by name, preprocessed as the paper and the authors' code do
(docs/design.md#hyperparameters).

Each entry reads a dataset from its usual on-disk layout under a data root and yields uint8
(C, H, W) images with a label. A dataset that is not staged is an FdrlError naming the folder
that was expected and how to stage it, raised before any work.

Held-out splits (`Dataset.held_out_from`) are never trained on; Table 1 scores them against
their training set's FID reference, the floor the metric itself allows. The bundled digits have
no test split, so one is defined by a fixed rule: `digits_test` is every DIGITS_TEST_EVERY-th
of scikit-learn's 1,797 images, `digits` the others. Interleaved, the two splits share writers,
as CIFAR10's training and test splits share their distribution.

`digits_blur` and `digits_blur_test` are the same two splits degraded by `blur_digits`: the
source domain of the demo's image-to-image translation (Table 4 on the digits), whose target
domain is the sharp digits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from fdrl.errors import FdrlError


class Source(Protocol):
    """Random access to (uint8 image (C, H, W), label) pairs, in a fixed order."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]: ...


@dataclass(frozen=True)
class Preprocess:
    """Preprocessing as the authors' released code writes it: torchvision.transforms on PIL
    images, applied in order. `Resize` with an (h, w) size squashes the image to it, with an int
    it scales the shorter side; its filter is torchvision's default on PIL images, bilinear and
    antialiased. `str()` names the steps; the shard manifest records it."""

    steps: tuple[tuple[str, int | tuple[int, int]], ...] = ()

    def __call__(self, img):
        from torchvision import transforms

        for kind, size in self.steps:
            img = getattr(transforms, kind)(size)(img)
        return img

    def __str__(self) -> str:
        return ", ".join(f"{kind}({size})" for kind, size in self.steps) or "none"


def _to_chw(img) -> np.ndarray:
    return np.asarray(img.convert("RGB")).transpose(2, 0, 1).copy()


class _Mapped:
    """A sequence of (PIL image, label) with a preprocessing function applied on access."""

    def __init__(self, items: Sequence, transform: Callable):
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        img, label = self.items[index]
        return _to_chw(self.transform(img)), int(label)


DIGITS_TEST_EVERY = 6  # every sixth digit (index % 6 == 5) is held out: 299 of the 1,797


BLUR_SIGMA, BLUR_CONTRAST = 0.9, 1.3


def blur_digits(images: np.ndarray) -> np.ndarray:
    """The translation demo's source domain: each 8x8 digit (values 0..16, (N, 8, 8)) blurred by
    a Gaussian of sigma BLUR_SIGMA pixels (zero outside the image), its contrast raised by
    BLUR_CONTRAST, clipped to 0..16.

    A fixed, label-preserving degradation: a blurred digit is still its digit, so whether a
    translation kept each image's content can be measured by a classifier. (Inverting the
    intensities keeps the label too, but puts the domains so far apart that the flow carries an
    image to some digit, rarely its own.) The contrast makes up for the ink blur spreads out.
    """
    from scipy.ndimage import gaussian_filter

    blurred = gaussian_filter(images.astype(np.float64), sigma=(0, BLUR_SIGMA, BLUR_SIGMA),
                              mode="constant")
    return np.clip(BLUR_CONTRAST * blurred, 0, 16)


class _Digits:
    """scikit-learn's 8x8 handwritten digits (values 0..16), scaled to uint8: the training
    split, or the held-out one (every DIGITS_TEST_EVERY-th image); `blurred`: through
    `blur_digits`."""

    def __init__(self, held_out: bool, blurred: bool = False):
        from sklearn.datasets import load_digits

        digits = load_digits()
        keep = (np.arange(len(digits.images)) % DIGITS_TEST_EVERY == DIGITS_TEST_EVERY - 1) == held_out
        images = blur_digits(digits.images[keep]) if blurred else digits.images[keep]
        self.images = np.round(images * (255 / 16)).astype(np.uint8)[:, None]
        self.labels = digits.target[keep]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.images[index], int(self.labels[index])


class _Lmdb:
    """An LSUN LMDB database: values are encoded images, read in key order."""

    def __init__(self, path: Path, transform: Callable):
        import lmdb

        self.path, self.transform = path, transform
        self.env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, meminit=False)
        with self.env.begin() as txn:
            self.keys = [key for key, _ in txn.cursor()]

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        import io

        from PIL import Image

        with self.env.begin() as txn:
            try:
                img = Image.open(io.BytesIO(txn.get(self.keys[index])))
            except OSError as err:  # PIL's UnidentifiedImageError is one
                raise FdrlError(f"entry {self.keys[index]!r} of {self.path} is not an image "
                                f"({err}); download the database again") from None
        return _to_chw(self.transform(img)), 0

    def __getstate__(self) -> dict:  # worker processes reopen the environment
        return {"path": self.path, "transform": self.transform}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["transform"])


class _Folder:
    """Image files of one folder (the DRIT Cat2dog layout), in name order."""

    def __init__(self, folder: Path, transform: Callable, label: int):
        self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        self.transform, self.label = transform, label

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        from PIL import Image

        try:
            img = Image.open(self.files[index])
        except OSError as err:  # PIL's UnidentifiedImageError is one
            raise FdrlError(f"{self.files[index]} is not an image ({err}); remove or replace "
                            "it, then run `fdrl shard` again") from None
        with img:
            return _to_chw(self.transform(img)), self.label


@dataclass(frozen=True)
class Dataset:
    """A dataset: its image shape, the folder it needs under the data root, how to stage it, its
    preprocessing, and (a held-out split) the training set it is held out from."""

    name: str
    shape: tuple[int, int, int]
    folder: str
    stage: str
    open: Callable[[Path, Preprocess], Source]
    preprocess: Preprocess = Preprocess()
    held_out_from: str = ""

    def source(self, data_root: str | Path) -> Source:
        """The dataset's images; an FdrlError naming the expected folder if it is not staged."""
        path = Path(data_root) / self.folder
        if self.folder and not path.exists():
            stage = self.stage.replace("DATA_ROOT", str(data_root))
            raise FdrlError(f"dataset {self.name} is not staged: expected {path}; {stage}")
        try:
            return self.open(Path(data_root), self.preprocess)
        except (RuntimeError, OSError, ValueError) as err:  # torchvision's, lmdb's, PIL's
            stage = self.stage.replace("DATA_ROOT", str(data_root))
            raise FdrlError(f"dataset {self.name} in {path} is incomplete or corrupt "
                            f"({str(err).strip().splitlines()[0][:160]}); stage it again: "
                            f"{stage}") from None


def _torchvision(name: str, **kwargs) -> Callable[[Path], Sequence]:
    def load(root: Path) -> Sequence:
        import torchvision

        return getattr(torchvision.datasets, name)(str(root), download=False, **kwargs)

    return load


_LOGIN_NODE = "on a login node with internet, run"
DATASETS: dict[str, Dataset] = {
    **{
        f"digits{blur}{test}": Dataset(
            f"digits{blur}{test}", (1, 8, 8), "", "it ships with scikit-learn",
            lambda root, preprocess, test=test, blur=blur: _Digits(bool(test), bool(blur)),
            held_out_from=f"digits{blur}" if test else "")
        for blur in ("", "_blur") for test in ("", "_test")
    },
    **{
        name: Dataset(
            name, (3, 32, 32), "cifar-10-batches-py",
            f"{_LOGIN_NODE} `python -c \"import torchvision; "
            "torchvision.datasets.CIFAR10('DATA_ROOT', download=True)\"`",
            lambda root, preprocess, train=train: _Mapped(
                _torchvision("CIFAR10", train=train)(root), preprocess),
            held_out_from="" if train else "cifar10")
        for name, train in (("cifar10", True), ("cifar10_test", False))
    },
    "celeba": Dataset(
        "celeba", (3, 64, 64), "celeba",
        f"{_LOGIN_NODE} `python -c \"import torchvision; "
        "torchvision.datasets.CelebA('DATA_ROOT', download=True)\"` "
        "(or place img_align_celeba/ and the list_*.txt files there by hand)",
        lambda root, preprocess: _Mapped(
            _torchvision("CelebA", split="train", target_type="identity")(root), preprocess),
        Preprocess((("CenterCrop", 140), ("Resize", 64)))),  # Appendix F
    "lsun_church": Dataset(
        "lsun_church", (3, 128, 128), "church_outdoor_train_lmdb",
        "download church_outdoor_train_lmdb.zip from the LSUN project and unzip it there",
        lambda root, preprocess: _Lmdb(root / "church_outdoor_train_lmdb", preprocess),
        # "resize the image to 128x128 directly" (Appendix F): squashed, not cropped.
        Preprocess((("Resize", (128, 128)),))),
    **{
        f"cat2dog_{split}": Dataset(
            f"cat2dog_{split}", (3, 64, 64), f"cat2dog/{split}",
            "download DRIT's cat2dog.zip (trainA, trainB, testA, testB) and unzip it there",
            lambda root, preprocess, split=split, label=label: _Folder(
                root / "cat2dog" / split, preprocess, label),
            Preprocess((("Resize", (84, 84)), ("CenterCrop", 64))),  # Appendix F
            held_out_from=f"cat2dog_train{split[-1]}" if split.startswith("test") else "")
        for split, label in (("trainA", 0), ("trainB", 1), ("testA", 0), ("testB", 1))
    },
}


def dataset(name: str) -> Dataset:
    """The dataset called `name`; an unknown name is an FdrlError listing the known ones."""
    if name not in DATASETS:
        raise FdrlError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]
