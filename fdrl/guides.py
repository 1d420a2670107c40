"""Classifiers that guide a class-conditional flow (Eq. 31, Appendix E), loaded by file.

A guide maps images in [-1, 1] (the flow's range) to logits over its classes. Two kinds of file:

- a digits classifier of `fdrl train-classifier` (the demo's; with `--robust-eps`, adversarially
  robust), which takes [-1, 1] images itself;
- the robust CIFAR10 ResNet50 of the `robustness` library (`cifar_l2_1_0.pt`, the paper's), which
  takes [0, 1] images: `fdrl.robust_resnet` feeds it (x + 1) / 2.

Both are read with `weights_only=True`; a file of neither kind is one clear error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fdrl.classifier import ARCH, IMAGE_SHAPE, load_classifier
from fdrl.errors import FdrlError
from fdrl.io import sha256
from fdrl.robust_resnet import load_robust_cifar


@dataclass
class Guide:
    """A guiding classifier in eval mode, the image shape and number of classes it takes, and
    what results record of it."""

    net: nn.Module
    image_shape: tuple[int, int, int]
    num_classes: int
    info: dict

    def check_labels(self, labels: list[int]) -> None:
        """Refuses a class index the classifier does not have."""
        bad = sorted({n for n in labels if not 0 <= n < self.num_classes})
        if bad:
            raise FdrlError(f"class {bad[0]} is out of range: the guide {self.info['path']} has "
                            f"classes 0-{self.num_classes - 1}")


def _is_digits_classifier(path: Path) -> bool:
    """Whether `path` holds a digits classifier; memory-mapped, so that telling a 94 MB
    robustness checkpoint from it reads its header, not its weights."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not ours: the robust ResNet's loader says what is wrong with it
        return False
    return isinstance(blob, dict) and isinstance(blob.get("config"), dict) \
        and blob["config"].get("arch") == ARCH


def load_guide(path: str | os.PathLike, device: torch.device | str = "cpu") -> Guide:
    """The guide in `path`, on `device`; no file there is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FdrlError(f"no guide classifier at {path}: train one with `fdrl train-classifier "
                        "--robust-eps EPS` (digits) or stage cifar_l2_1_0.pt (CIFAR10)")
    info = {"path": str(path), "sha256": sha256(path)}
    if _is_digits_classifier(path):
        net, config = load_classifier(path)
        info.update(kind=ARCH, robust_eps=config.get("robust_eps", 0.0),
                    test_accuracy=config["test_accuracy"])
        shape = IMAGE_SHAPE
    else:
        net = load_robust_cifar(path)
        info.update(kind="robustness cifar ResNet50 (L2)")
        shape = (3, 32, 32)
    return Guide(net.to(device).eval(), shape, 10, info)
