"""Sample chunks: the .npz files `fdrl sample` writes and FID and the figures read
(docs/design.md#formats).

A chunk holds `images` (uint8 NHWC), `seeds` (int64, the seed of each image) and `run_info`, a
JSON string naming the run, its training set, prior, pairing, step counts and config hash, which
FID results and Table 1 carry on. Chunks of class-conditional samples and of translated images
also hold `labels` (int64): the class each image was conditioned on, or its source image's
label. The chunks of one FID or figure come from one run and one flow length, and no seed
occurs twice among them.

Only `chunk_batches` needs torch, and imports it: a figure drawn from chunks starts without it.
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import TYPE_CHECKING, Iterator

import numpy as np

from fdrl.errors import FdrlError
from fdrl.io import atomic_path, check_zip

if TYPE_CHECKING:
    from torch import Tensor

Paths = list[str | os.PathLike]


def write_chunk(out: str | os.PathLike, images: np.ndarray, seeds: np.ndarray, run_info: dict,
                labels: np.ndarray | None = None) -> None:
    """Writes one chunk atomically (`labels`, one per image, where the images have them)."""
    extra = {} if labels is None else {"labels": np.asarray(labels, dtype=np.int64)}
    with atomic_path(out) as tmp, open(tmp, "wb") as f:  # a file object: savez adds no suffix
        np.savez(f, images=images, seeds=seeds, run_info=np.array(json.dumps(run_info)), **extra)


def _npy_header(z: zipfile.ZipFile, name: str) -> tuple[tuple, np.dtype]:
    """Shape and dtype of one array of an .npz, read without loading it."""
    with z.open(f"{name}.npy") as f:
        version = np.lib.format.read_magic(f)
        fmt = np.lib.format
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = read(f)
    return shape, dtype


def check_chunks(paths: Paths) -> tuple[int, tuple[int, int, int]]:
    """Checks every chunk (uint8 NHWC `images` with one `seeds` entry each, one image shape, no
    seed twice) without loading the images; returns the number of images and their (C, H, W)."""
    shapes, seeds = {}, []
    for path in paths:
        if not os.path.isfile(path):
            raise FdrlError(f"no sample chunk at {path}: run `fdrl sample` first")
        try:
            check_zip(path)
            with zipfile.ZipFile(path) as z:
                shape, dtype = _npy_header(z, "images")
            with np.load(path) as z:
                chunk_seeds = z["seeds"]
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
            raise FdrlError(f"{path} is not a sample chunk of `fdrl sample` ({err})") from None
        if dtype != np.uint8 or len(shape) != 4 or shape[3] not in (1, 3):
            raise FdrlError(f"{path}: images must be uint8 (N, H, W, C) with C = 1 or 3, got "
                            f"{dtype} {shape}; write them with `fdrl sample`")
        if len(chunk_seeds) != shape[0]:
            raise FdrlError(f"{path} holds {shape[0]} images but {len(chunk_seeds)} seeds")
        shapes[path], seeds = (shape[3], shape[1], shape[2]), seeds + list(chunk_seeds)
    if len(set(shapes.values())) > 1:
        raise FdrlError(f"sample chunks of different image shapes: {shapes}")
    if len(set(seeds)) != len(seeds):
        raise FdrlError("a seed occurs twice among the sample chunks (a chunk given twice?)")
    return len(seeds), next(iter(shapes.values()))


def run_info(paths: Paths) -> dict | None:
    """The run info the chunks share (None for chunks written without one); chunks of different
    runs or flow lengths are refused."""
    infos = []
    for path in paths:
        with np.load(path, allow_pickle=False) as chunk:
            infos.append(json.loads(str(chunk["run_info"])) if "run_info" in chunk else None)
    if any(info != infos[0] for info in infos):
        raise FdrlError(f"the sample chunks come from different runs or flow lengths "
                        f"({', '.join(sorted({json.dumps(i, sort_keys=True) for i in infos}))}); "
                        "give the chunks of one `fdrl sample` setting")
    return infos[0] if infos else None


def read_chunks(paths: Paths) -> tuple[np.ndarray, np.ndarray, dict | None]:
    """The images (uint8 NHWC) and seeds of the chunks, concatenated in the order given, and
    the run info they share."""
    check_chunks(paths)
    info = run_info(paths)
    images, seeds = [], []
    for path in paths:
        with np.load(path, allow_pickle=False) as chunk:
            images.append(chunk["images"])
            seeds.append(chunk["seeds"])
    return np.concatenate(images), np.concatenate(seeds), info


def read_labels(paths: Paths) -> np.ndarray | None:
    """The labels of the chunks, concatenated in the order given; None if no chunk has labels
    (unconditional samples), an error if only some have."""
    labels = []
    for path in paths:
        with np.load(path, allow_pickle=False) as chunk:
            labels.append(chunk["labels"] if "labels" in chunk else None)
    if all(part is None for part in labels):
        return None
    if any(part is None for part in labels):
        raise FdrlError("some of the sample chunks hold labels and some do not: give the chunks "
                        "of one `fdrl sample` or `fdrl translate` setting")
    return np.concatenate(labels)


def chunk_batches(paths: Paths, rank: int, world_size: int, batch: int) -> Iterator[Tensor]:
    """This rank's images of the chunks (global index = rank mod world size), as uint8
    (B, C, H, W) batches."""
    import torch

    offset = 0
    for path in paths:
        with np.load(path) as z:
            images = z["images"]
        mine = images[(rank - offset) % world_size::world_size]
        offset += len(images)
        for start in range(0, len(mine), batch):
            yield torch.from_numpy(np.ascontiguousarray(mine[start:start + batch].transpose(0, 3, 1, 2)))
