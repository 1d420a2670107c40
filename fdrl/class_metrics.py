"""`fdrl classify`: what the digits classifier says of images, per class.

The demo measures its translations (Table 4) and its class-conditional samples (Fig. 6) with the
ordinary digits classifier behind the classifier FID, which no guided flow ever sees:

- accuracy: the fraction of images the classifier assigns to their label: a translated image's
  label is its source image's (content kept), a conditional sample's the class it was
  conditioned on; real images of a labelled shard folder give the classifier's own accuracy;
- assigned fraction: the fraction of all images the classifier assigns to each class (about a
  tenth for unconditional samples of the digits);
- per-class classifier FID (with `real`): the Frechet distance between the classifier features
  of the images of class n and those of the real images of class n. The images of class n are
  those labelled n or, for unlabelled (unconditional) samples, those the classifier assigns to n;
  with `per_class` only the first that many by seed, so that guided and unguided samples are
  compared on the same number of images (FID's bias grows as the count falls). A class with
  fewer than two images gets no FID (null).
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from torch import Tensor

from fdrl.chunks import read_chunks, read_labels
from fdrl.classifier import IMAGE_SHAPE, load_classifier, preprocess
from fdrl.data import load_manifest, one_pass, shard_labels
from fdrl.errors import FdrlError
from fdrl.fid import frechet_distance
from fdrl.io import sha256, write_text_atomic

NUM_CLASSES = 10


def _labelled_shards(folder: str | os.PathLike) -> tuple[Tensor, np.ndarray]:
    """Every image of a shard folder (uint8 NCHW) and its label."""
    labels = shard_labels(folder)
    index, images = zip(*one_pass(folder, batch=1024))
    return torch.cat(images), labels[torch.cat(index).numpy()]


def _chunk_images(paths: list[str]) -> tuple[Tensor, np.ndarray | None, dict | None]:
    """The chunks' images (uint8 NCHW) ordered by seed, their labels if they have them, and
    their run info."""
    images, seeds, info = read_chunks(paths)
    order = np.argsort(seeds, kind="stable")
    labels = read_labels(paths)
    return (torch.from_numpy(images[order]).permute(0, 3, 1, 2),
            None if labels is None else labels[order], info)


def _features(model, images: Tensor, batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, float64 features) of uint8 images."""
    preds, feats = [], []
    with torch.no_grad():
        for x in preprocess(images).split(batch):
            f = model.features(x)
            preds.append(model.head(f).argmax(1))
            feats.append(f.double())
    return torch.cat(preds).numpy(), torch.cat(feats).numpy()


def _fid(a: np.ndarray, b: np.ndarray) -> float:
    """FID of two feature sets (unbiased covariances, as `fdrl.fid`)."""
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def classify(classifier: str | os.PathLike, out: str | os.PathLike, samples: list[str] = (),
             shards: str | os.PathLike | None = None, real: str | os.PathLike | None = None,
             per_class: int | None = None) -> dict:
    """Accuracy and assigned fractions (per class) of the images of sample chunks or of a
    labelled shard folder, and with `real` the per-class classifier FID; writes JSON to `out`."""
    if bool(samples) == (shards is not None):
        raise FdrlError("fdrl classify takes either sample chunks (--samples) or a shard folder "
                        "(--shards), one of the two")
    if per_class is not None and per_class < 2:
        raise FdrlError(f"--per-class must be at least 2 (a covariance needs 2 images), got {per_class}")
    model, config = load_classifier(classifier)
    if samples:
        images, labels, info = _chunk_images(list(samples))
        origin = {"samples": [str(p) for p in samples], "run": info}
    else:
        images, labels = _labelled_shards(shards)
        origin = {"shards": str(shards), "dataset": load_manifest(shards).dataset}
    if tuple(images.shape[1:]) != IMAGE_SHAPE:
        raise FdrlError(f"the images of {(samples or [shards])[0]} are {tuple(images.shape[1:])}; "
                        f"the digits classifier takes {IMAGE_SHAPE}")
    predicted, features = _features(model, images)
    reference = None
    if real is not None:
        real_images, real_labels = _labelled_shards(real)
        reference = (_features(model, real_images)[1], real_labels)
    classes = [_class_row(n, predicted, features, labels, reference, per_class)
               for n in range(NUM_CLASSES)]
    result = {
        "n_images": len(images), "labelled": labels is not None,
        "accuracy": None if labels is None else float((predicted == labels).mean()),
        "classes": classes, "per_class": per_class, "real": None if real is None else str(real),
        "classifier": {"path": str(classifier), "sha256": sha256(classifier),
                       "test_accuracy": config["test_accuracy"]},
        **origin,
    }
    write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    return result


def _class_row(n: int, predicted: np.ndarray, features: np.ndarray, labels: np.ndarray | None,
               reference: tuple[np.ndarray, np.ndarray] | None, per_class: int | None) -> dict:
    """One class's numbers (see the module docstring)."""
    members = np.flatnonzero((labels if labels is not None else predicted) == n)
    accuracy = float((predicted[members] == n).mean()) if labels is not None and len(members) else None
    row = {"class": n, "assigned_fraction": float((predicted == n).mean()),
           "count": int(len(members)), "accuracy": accuracy}
    if reference is not None:
        chosen = members[:per_class]  # fewer where the class has fewer: fid_images says so
        real = reference[0][reference[1] == n]
        enough = len(chosen) >= 2 and len(real) >= 2  # a covariance needs two
        row.update(fid=_fid(features[chosen], real) if enough else None,
                   fid_images=int(len(chosen)), fid_real_images=int(len(real)))
    return row
