"""The datasets of the paper, preprocessed as docs/design.md#hyperparameters says, by name.

Each entry reads a dataset from its usual on-disk layout under a data root and yields uint8
(C, H, W) images with a label. A dataset that is not staged is an FdrlError naming the folder
that was expected and how to stage it, raised before any work.
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


def _resize_shorter(img, size: int):
    from PIL import Image

    w, h = img.size
    scale = size / min(w, h)
    return img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)


def _center_crop(img, size: int):
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


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


class _Digits:
    """scikit-learn's 8x8 handwritten digits (values 0..16), scaled to uint8."""

    def __init__(self):
        from sklearn.datasets import load_digits

        digits = load_digits()
        self.images = np.round(digits.images * (255 / 16)).astype(np.uint8)[:, None]
        self.labels = digits.target

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
            img = Image.open(io.BytesIO(txn.get(self.keys[index])))
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

        with Image.open(self.files[index]) as img:
            return _to_chw(self.transform(img)), self.label


@dataclass(frozen=True)
class Dataset:
    """A dataset: its image shape, the folder it needs under the data root, how to stage it."""

    name: str
    shape: tuple[int, int, int]
    folder: str
    stage: str
    open: Callable[[Path], Source]

    def source(self, data_root: str | Path) -> Source:
        """The dataset's images; an FdrlError naming the expected folder if it is not staged."""
        path = Path(data_root) / self.folder
        if self.folder and not path.exists():
            stage = self.stage.replace("DATA_ROOT", str(data_root))
            raise FdrlError(f"dataset {self.name} is not staged: expected {path}; {stage}")
        return self.open(Path(data_root))


def _torchvision(name: str, **kwargs) -> Callable[[Path], Sequence]:
    def load(root: Path) -> Sequence:
        import torchvision

        return getattr(torchvision.datasets, name)(str(root), download=False, **kwargs)

    return load


def _cat2dog(split: str, label: int) -> Callable[[Path], Source]:
    # Resize 84 then center-crop 64 (Appendix F).
    return lambda root: _Folder(root / "cat2dog" / split,
                                lambda img: _center_crop(_resize_shorter(img, 84), 64), label)


_LOGIN_NODE = "on a login node with internet, run"
DATASETS: dict[str, Dataset] = {
    "digits": Dataset("digits", (1, 8, 8), "", "it ships with scikit-learn", lambda root: _Digits()),
    "cifar10": Dataset(
        "cifar10", (3, 32, 32), "cifar-10-batches-py",
        f"{_LOGIN_NODE} `python -c \"import torchvision; torchvision.datasets.CIFAR10('DATA_ROOT', download=True)\"`",
        lambda root: _Mapped(_torchvision("CIFAR10", train=True)(root), lambda img: img)),
    "celeba": Dataset(
        "celeba", (3, 64, 64), "celeba",
        f"{_LOGIN_NODE} `python -c \"import torchvision; torchvision.datasets.CelebA('DATA_ROOT', download=True)\"` "
        "(or place img_align_celeba/ and the list_*.txt files there by hand)",
        # Center-crop 140, then resize 64 (Appendix F).
        lambda root: _Mapped(_torchvision("CelebA", split="train", target_type="identity")(root),
                             lambda img: _resize_shorter(_center_crop(img, 140), 64))),
    "lsun_church": Dataset(
        "lsun_church", (3, 128, 128), "church_outdoor_train_lmdb",
        "download church_outdoor_train_lmdb.zip from the LSUN project and unzip it there",
        # Resize 128, then center-crop 128 (Appendix F).
        lambda root: _Lmdb(root / "church_outdoor_train_lmdb",
                           lambda img: _center_crop(_resize_shorter(img, 128), 128))),
    **{
        f"cat2dog_{split}": Dataset(
            f"cat2dog_{split}", (3, 64, 64), f"cat2dog/{split}",
            "download DRIT's cat2dog.zip (trainA, trainB, testA, testB) and unzip it there",
            _cat2dog(split, label))
        for split, label in (("trainA", 0), ("trainB", 1), ("testA", 0), ("testB", 1))
    },
}


def dataset(name: str) -> Dataset:
    """The dataset called `name`; an unknown name is an FdrlError listing the known ones."""
    if name not in DATASETS:
        raise FdrlError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]
