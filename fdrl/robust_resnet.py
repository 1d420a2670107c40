"""The adversarially robust CIFAR10 classifier of the paper's class-conditional generation.

Appendix E (Eq. 31) composes the model with a pretrained robust classifier: the ResNet50 trained
with L2 PGD at eps = 1.0 from MadryLab's `robustness` library (MIT), released as
`cifar_l2_1_0.pt`. That package is unmaintained and pins old dependencies, so the network and its
input normalizer are written here with the attribute names of its `cifar_models/resnet.py` and
`tools/helpers.py`, and the checkpoint's state dict maps onto them one to one: `module.model.*` is
the ResNet, `module.normalizer.*` the normalizer, and `module.attacker.*` (the same tensors again,
held by the PGD attacker) is skipped. The classifier takes images in [0, 1] (its normalizer clamps
to that range); the flow's samples live in [-1, 1], so `RobustCifarClassifier` feeds it (x + 1) / 2.
Checkpoints are read with `weights_only=True`: no pickled code is ever run. (The released
cifar_l2_1_0.pt was saved with dill and reportedly fails to unpickle on Python >= 3.8, robustness
issues #71 and #105; if it holds pickled code, the loader's error says how to extract its weights.)
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fdrl.checkpoint import save_tensors
from fdrl.errors import FdrlError
from fdrl.io import check_zip

# The "Pretrained models" list of https://github.com/MadryLab/robustness (README.rst), entry
# "CIFAR L2-norm (ResNet50): eps = 1.0".
CIFAR_L2_1_0_URL = "https://www.dropbox.com/s/s2x7thisiqxz095/cifar_l2_1_0.pt?dl=0"
# robustness/datasets.py, class CIFAR.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
_WHERE = ("the CIFAR10 L2 eps=1.0 ResNet50 cifar_l2_1_0.pt of the robustness library"
          f" ({CIFAR_L2_1_0_URL})")


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (carrying the stride) -> 1x1 convolutions, widening `planes` by 4, plus a
    shortcut that is a 1x1 convolution and batch norm where the shape changes, else the identity."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out = self.expansion * planes
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


class CifarResNet50(nn.Module):
    """The CIFAR ResNet50 of `robustness`: a 3x3 stem of 64 channels at stride 1 (no max-pool),
    Bottleneck stages [3, 4, 6, 3] of widths 64..512 at strides 1, 2, 2, 2, a 4x4 average pool
    (32x32 inputs end at 4x4) and `linear` to the logits."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._stage(64, 3, 1)
        self.layer2 = self._stage(128, 4, 2)
        self.layer3 = self._stage(256, 6, 2)
        self.layer4 = self._stage(512, 3, 2)
        self.linear = nn.Linear(512 * Bottleneck.expansion, num_classes)

    def _stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(Bottleneck(self.in_planes, planes, s))
            self.in_planes = planes * Bottleneck.expansion
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(F.avg_pool2d(out, 4).flatten(1))


class InputNormalize(nn.Module):
    """Clamps images to [0, 1], then standardizes them per channel (buffers `new_mean`, `new_std`
    of shape (3, 1, 1), as in the checkpoint)."""

    def __init__(self, mean: tuple[float, ...] = CIFAR10_MEAN, std: tuple[float, ...] = CIFAR10_STD):
        super().__init__()
        self.register_buffer("new_mean", torch.tensor(mean)[:, None, None])
        self.register_buffer("new_std", torch.tensor(std)[:, None, None])

    def forward(self, x: Tensor) -> Tensor:
        return (x.clamp(0, 1) - self.new_mean) / self.new_std


class RobustCifarClassifier(nn.Module):
    """Normalizer and ResNet50 as `robustness` holds them (`normalizer`, `model`); the forward
    takes images in [-1, 1] and returns the logits of (x + 1) / 2."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.normalizer = InputNormalize()
        self.model = CifarResNet50(num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.normalizer((x + 1) / 2))


def write_robust_cifar_checkpoint(model: RobustCifarClassifier, path: str | os.PathLike,
                                  epoch: int = 0) -> None:
    """Writes `model` atomically in the key layout of a `robustness` checkpoint: {'model': state
    dict, 'epoch': int}, its keys `module.normalizer.*`, `module.model.*` and, sharing the same
    tensors as in the original, `module.attacker.normalize.*` and `module.attacker.model.*`. For
    tests and smoke-scale runs that cannot download the real file."""
    net = {k: v.detach().cpu() for k, v in model.model.state_dict().items()}
    norm = {k: v.detach().cpu() for k, v in model.normalizer.state_dict().items()}
    state = {}
    for prefix, part in (("module.normalizer.", norm), ("module.model.", net),
                         ("module.attacker.normalize.", norm), ("module.attacker.model.", net)):
        state.update({prefix + k: v for k, v in part.items()})
    save_tensors({"model": state, "epoch": int(epoch)}, path)


def _not_a_checkpoint(path: Path, err: Exception) -> FdrlError:
    return FdrlError(f"{path} is not a PyTorch checkpoint ({err!r:.120}); download {_WHERE}")


def _read_state_dict(path: Path) -> dict:
    """The state dict under 'model' (or, in older files, 'state_dict'), read without unpickling
    anything but tensors and plain containers."""
    if not path.is_file():
        raise FdrlError(f"{path} does not exist; download {_WHERE} and pass its path")
    try:
        check_zip(path)
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        if found or "Unsupported global" in str(err):
            raise FdrlError(
                f"{path} holds pickled Python objects besides tensors"
                f" ({found[1] if found else 'a global'}), which this loader refuses to unpickle;"
                " convert it once where its pickles load (the robustness library's environment,"
                " Python 3.7 with dill) with `torch.save({'model': torch.load(SRC,"
                " pickle_module=dill)['model']}, DST)` and pass DST") from None
        raise _not_a_checkpoint(path, err) from None
    except Exception as err:  # zip, EOF, magic-number and I/O errors all mean "not a checkpoint"
        raise _not_a_checkpoint(path, err) from None
    state = None
    if isinstance(blob, dict):
        state = blob.get("model", blob.get("state_dict"))
    if not isinstance(state, dict):
        raise FdrlError(f"{path} holds no state dict under 'model' or 'state_dict'; download {_WHERE}")
    return state


def load_robust_cifar(path: str | os.PathLike) -> RobustCifarClassifier:
    """The robust classifier of `path` (a `robustness` checkpoint such as cifar_l2_1_0.pt, or one
    of `write_robust_cifar_checkpoint`) in eval mode with frozen weights: `module.model.*` and
    `module.normalizer.*` are loaded strictly, `module.attacker.*` is skipped, and a missing file,
    a file of another kind or a state dict of another architecture is a clear FdrlError."""
    path = Path(path)
    state = {k: v for k, v in _read_state_dict(path).items() if not k.startswith("module.attacker.")}
    classifier = RobustCifarClassifier()
    try:  # loaded under the file's own prefix, so errors name its keys as it spells them
        nn.ModuleDict({"module": classifier}).load_state_dict(state, strict=True)
    except Exception as err:  # missing or unexpected keys, shape mismatches, non-tensor values
        problems = [p.strip().rstrip(".") for p in str(err).split("\n\t")[1:] or [str(err)]]
        first = problems[0] if len(problems[0]) <= 200 else problems[0][:200] + "..."
        more = f", and {len(problems) - 1} more problem(s)" if len(problems) > 1 else ""
        raise FdrlError(f"{path} does not match the CIFAR ResNet50 of the robustness library"
                        f" ({first}{more}); expected {_WHERE}") from None
    return classifier.eval().requires_grad_(False)
