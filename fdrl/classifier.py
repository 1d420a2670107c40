"""The digits classifier behind the demo's "classifier FID" (docs/design.md#evaluation).

Inception features of 8x8 digits blown up to 299x299 say little, so the demo measures FID in the
penultimate layer of a small CNN trained here on scikit-learn's digits: a "classifier FID",
always named so, never an Inception FID. Training is seeded and takes seconds on one CPU core;
the file holds a state_dict and a plain config (ints, floats, strings), loadable with
`torch.load(..., weights_only=True)`.

The same network, trained adversarially (`robust_eps` > 0: L2 PGD, Madry et al. 2018), is the
demo's guide for class-conditional generation (Eq. 31), standing in for the paper's robust
CIFAR10 ResNet50: a robust classifier's input gradients point towards images of its class, a
standard one's towards noise-like patterns (Santurkar et al. 2019, the paper's [29]).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from fdrl.checkpoint import save_tensors
from fdrl.errors import FdrlError
from fdrl.io import check_zip

ARCH = "digits-cnn"
IMAGE_SHAPE = (1, 8, 8)


class DigitsClassifier(nn.Module):
    """Three 3x3 convolutions and two poolings (8x8 -> 2x2), a `feature_dim` layer, 10 logits."""

    def __init__(self, feature_dim: int = 64, channels: int = 32):
        super().__init__()
        c = channels
        self.body = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.LeakyReLU(0.2), nn.MaxPool2d(2),
            nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.LeakyReLU(0.2), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * c * 4, feature_dim), nn.LeakyReLU(0.2))
        self.head = nn.Linear(feature_dim, 10)

    def features(self, x: Tensor) -> Tensor:
        """The penultimate layer: what the classifier FID compares."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def preprocess(images: Tensor) -> Tensor:
    """uint8 images (B, 1, 8, 8) -> float in [-1, 1], the range the flow's samples live in."""
    return images.float() / 127.5 - 1


def _digits(name: str) -> tuple[Tensor, Tensor]:
    """A digits split exactly as `fdrl shard` stores it, preprocessed, and its labels."""
    from fdrl.datasets import dataset

    src = dataset(name).source("unused")
    images = np.stack([src[i][0] for i in range(len(src))])
    labels = np.array([src[i][1] for i in range(len(src))])
    return preprocess(torch.from_numpy(images)), torch.from_numpy(labels).long()


def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).double().mean().item()


def pgd_l2(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int) -> Tensor:
    """The L2 PGD attack: `steps` ascent steps on the cross-entropy along the normalized
    gradient, of size 2.5 eps / steps, each projected onto the L2 ball of radius `eps` around
    `x` and onto the image range [-1, 1]. Returns the perturbed images (detached)."""
    step = 2.5 * eps / steps
    delta = torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        (grad,) = torch.autograd.grad(nn.functional.cross_entropy(model(x + delta), y), delta)
        delta = delta.detach() + step * grad / _l2(grad).clamp_min(1e-12)
        delta = delta * (eps / _l2(delta).clamp_min(1e-12)).clamp(max=1)
        delta = (x + delta).clamp(-1, 1) - x
    return (x + delta).detach()


def _l2(x: Tensor) -> Tensor:
    """The L2 norm of each image, shaped to broadcast against the batch."""
    return x.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))


def train_classifier(out: str | os.PathLike, seed: int = 0, epochs: int = 30, batch: int = 64,
                     lr: float = 1e-3, feature_dim: int = 64, robust_eps: float = 0.0,
                     pgd_steps: int = 7) -> dict:
    """Trains the classifier on the digits' training split, measures its accuracy on the
    held-out `digits_test` (never trained on), writes `out` (state_dict and config)
    atomically, and returns the config.

    `robust_eps` > 0 trains on L2 PGD adversarial examples of that radius (in [-1, 1] pixel
    units, `pgd_steps` steps; Madry et al.'s min-max training), and also measures the test
    accuracy under that attack.
    """
    if not robust_eps >= 0 or pgd_steps < 1:
        raise FdrlError(f"--robust-eps must be non-negative and --pgd-steps positive; got "
                        f"{robust_eps} and {pgd_steps}")
    xtr, ytr = _digits("digits")
    xte, yte = _digits("digits_test")
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitsClassifier(feature_dim)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        for idx in torch.randperm(len(xtr), generator=g).split(batch):
            x = xtr[idx] if not robust_eps else pgd_l2(model, xtr[idx], ytr[idx], robust_eps, pgd_steps)
            loss = nn.functional.cross_entropy(model(x), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    config = {"arch": ARCH, "feature_dim": feature_dim, "image_shape": list(IMAGE_SHAPE),
              "seed": seed, "epochs": epochs, "batch": batch, "lr": lr,
              "robust_eps": robust_eps, "pgd_steps": pgd_steps if robust_eps else 0,
              "train_size": len(xtr), "test_size": len(xte),
              "train_accuracy": _accuracy(model, xtr, ytr), "test_accuracy": _accuracy(model, xte, yte)}
    if robust_eps:
        config["robust_test_accuracy"] = _accuracy(
            model, pgd_l2(model, xte, yte, robust_eps, 2 * pgd_steps), yte)
    save_tensors({"state_dict": model.state_dict(), "config": config}, out)
    return config


def load_classifier(path: str | os.PathLike) -> tuple[DigitsClassifier, dict]:
    """The classifier in eval mode, and its config; a file of another kind is a clear error."""
    path = Path(path)
    try:
        check_zip(path)
        blob = torch.load(path, map_location="cpu", weights_only=True)
        config = blob["config"]
        if config["arch"] != ARCH:
            raise KeyError("arch")
        model = DigitsClassifier(config["feature_dim"])
        model.load_state_dict(blob["state_dict"])
    except Exception as err:  # unpickling, missing keys and shape mismatches all mean the same
        raise FdrlError(f"{path} is not a digits classifier of `fdrl train-classifier` ({err!r:.200}); "
                        "rewrite it with `fdrl train-classifier --out FILE`") from None
    return model.eval(), config
