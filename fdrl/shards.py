"""`fdrl shard`: a dataset converted once into WebDataset tar shards (docs/design.md#formats).

Shard i holds samples [i * shard_size, (i + 1) * shard_size) in the dataset's fixed order, each
as `{index:08d}.png` (lossless) and `{index:08d}.cls` (its label). Shards are independent, so
they are written in parallel by a pool of processes; tar headers carry no time stamps and PNG
encoding is deterministic, so a re-run writes byte-identical files. `manifest.json` records
the image shape, the preprocessing, the count per shard and each shard's sha256, and is written
last: a folder with a manifest is complete. Readers (`fdrl.data`) check each shard against its sha256.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from fdrl.datasets import Source, dataset
from fdrl.errors import FdrlError
from fdrl.io import atomic_path, sha256, write_text_atomic
from fdrl.progress import progress


def encode_png(image: np.ndarray) -> bytes:
    """uint8 (C, H, W) as PNG bytes (grayscale for C = 1)."""
    from PIL import Image

    img = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def write_shard(source: Source, path: Path, indices: range, shape: tuple[int, ...]) -> dict:
    """Writes the samples `indices` of `source` to the tar at `path`; returns its manifest entry."""
    import webdataset as wds

    # The writer closes before its file, also on an error (then atomic_path drops the file).
    with atomic_path(path) as tmp, open(tmp, "wb") as f, wds.TarWriter(f, mtime=0.0) as writer:
        for i in indices:
            image, label = source[i]
            if image.dtype != np.uint8 or tuple(image.shape) != shape:
                raise FdrlError(f"sample {i} is {image.dtype} {tuple(image.shape)}, expected uint8 {shape}")
            writer.write({"__key__": f"{i:08d}", "png": encode_png(image), "cls": str(label).encode()})
    return {"file": path.name, "count": len(indices), "sha256": sha256(path)}


@functools.lru_cache(maxsize=1)
def _opened(name: str, data_root: str) -> Source:
    """Dataset `name`'s images, opened once per process: opening the digits or CIFAR10 loads
    every image, which each shard's job would otherwise repeat."""
    return dataset(name).source(data_root)


def _write_shard_job(args: tuple) -> dict:
    name, data_root, path, start, stop = args
    return write_shard(_opened(name, data_root), path, range(start, stop), dataset(name).shape)


def shard(name: str, data_root: str | os.PathLike, out: str | os.PathLike, shard_size: int,
          workers: int = 1) -> dict:
    """Writes every image of dataset `name` as shards in `out` (`train-*.tar`, or `test-*.tar`
    for a held-out split); returns the manifest."""
    if shard_size < 1:
        raise FdrlError(f"--shard-size must be positive, got {shard_size}")
    ds = dataset(name)
    split = "test" if ds.held_out_from else "train"
    count = len(ds.source(data_root))  # fails here, before any work, if the data is not staged
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FdrlError(f"--out {out} is a file, not a folder; name a folder for the shards")
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(name, str(data_root), out / f"{split}-{i:06d}.tar", i * shard_size,
             min(count, (i + 1) * shard_size)) for i in range(math.ceil(count / shard_size))]
    entries = []
    try:
        with (ProcessPoolExecutor(workers) if workers > 1 else nullcontext()) as pool, \
                progress(count, f"shard {name}", "img") as bar:
            for entry in (pool.map if pool else map)(_write_shard_job, jobs):  # in shard order
                entries.append(entry)
                bar.update(entry["count"])
    except BaseException:
        if made:  # a folder this call made holds nothing until it is complete
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        _opened.cache_clear()  # a later call in this process sees the data as it is then
    manifest = {"dataset": name, "split": split, "shape": list(ds.shape), "count": count,
                "preprocess": str(ds.preprocess),
                "format": "webdataset: {index:08d}.png (uint8, lossless), {index:08d}.cls",
                "shards": entries}
    write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return manifest
