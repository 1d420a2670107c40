"""Reading the WebDataset shards that `fdrl shard` writes (docs/design.md#formats).

Shards are tar files of `{index:08d}.png` (lossless, uint8) and `{index:08d}.cls` (label) with a
`manifest.json` beside them (count, shape and sha256 of each shard). Two readers:

- `one_pass`: every image exactly once, shards split across ranks and DataLoader workers (prior
  fitting, FID statistics), streamed through webdataset; `select_shards` checks the chosen
  shards' checksums first and the number of images read afterwards.
- `TrainStream`: Algorithm 1's data batches. The global batch of step t is a function of (seed,
  t) alone: epoch-wise shuffled indices, flips and the Gaussian dequantization are drawn for the
  whole global batch, and each rank decodes only its own slice. So 1 or N ranks see the same
  global batch, every rank gets a batch at every step (DDP never waits on a short rank), and a
  resumed run continues exactly, without replaying the stream. It reads images by random access
  into the tars (`ShardStore`).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from fdrl.datasets import DATASETS
from fdrl.errors import FdrlError
from fdrl.io import sha256
from fdrl.noise import key_seed


@dataclass(frozen=True)
class Manifest:
    """What `manifest.json` says of a shard folder: image shape, count, and each shard."""

    folder: Path
    dataset: str
    shape: tuple[int, int, int]
    count: int
    shards: tuple[dict, ...]

    @property
    def paths(self) -> list[Path]:
        return [self.folder / s["file"] for s in self.shards]

    def refuse_held_out(self, use: str) -> None:
        """A held-out split (`fdrl.datasets`) is only ever scored: never used for `use`."""
        held_out_from = DATASETS[self.dataset].held_out_from if self.dataset in DATASETS else ""
        if held_out_from:
            raise FdrlError(f"the shards in {self.folder} are {self.dataset}, a held-out split "
                            f"that is never used for {use}; use the shards of {held_out_from}")


def load_manifest(folder: str | os.PathLike) -> Manifest:
    """Reads `folder/manifest.json`; a missing or malformed one is a clear error."""
    folder = Path(folder)
    path = folder / "manifest.json"
    if not path.is_file():
        raise FdrlError(f"no manifest.json in {folder}: write the shards with `fdrl shard` first")
    try:
        m = json.loads(path.read_text())
        manifest = Manifest(folder, m["dataset"], tuple(m["shape"]), int(m["count"]),
                            tuple(m["shards"]))
        listed = sum(int(s["count"]) for s in manifest.shards)
    except (ValueError, KeyError, TypeError) as err:
        raise FdrlError(f"{path} is not a shard manifest ({err}); rewrite it with `fdrl shard`") from None
    if listed != manifest.count:
        raise FdrlError(f"{path} says {manifest.count} images but its shards list {listed}; "
                        "rewrite the shards with `fdrl shard`")
    ds = DATASETS.get(manifest.dataset)
    if ds is not None and manifest.shape != ds.shape:
        raise FdrlError(f"{path} says images of shape {manifest.shape}, but {manifest.dataset}'s "
                        f"are {ds.shape}; rewrite the shards with `fdrl shard`")
    if ds is not None and m.get("preprocess") != str(ds.preprocess):
        made = f"preprocessed as {m['preprocess']}" if "preprocess" in m else (
            "by an older fdrl that did not record its preprocessing")
        raise FdrlError(f"the shards in {folder} were made {made}; this fdrl preprocesses "
                        f"{manifest.dataset} as {ds.preprocess}. Delete the folder and rewrite the "
                        "shards with `fdrl shard`")
    return manifest


def manifest_sha256(folder: str | os.PathLike) -> str:
    """The SHA-256 of a shard folder's manifest.json, which lists every shard's own SHA-256: one
    hash that names the exact data (what runs, priors and references record)."""
    return sha256(Path(folder) / "manifest.json")


def verify(folder: str | os.PathLike, files: list[Path] | None = None) -> None:
    """Checks that each shard of the manifest (or only `files`) exists and matches its sha256."""
    manifest = load_manifest(folder)
    wanted = None if files is None else {Path(f).name for f in files}
    for path, info in zip(manifest.paths, manifest.shards):
        if wanted is not None and path.name not in wanted:
            continue
        if not path.is_file():
            raise FdrlError(f"shard {path} is missing; rewrite the shards with `fdrl shard`")
        if sha256(path) != info["sha256"]:
            raise FdrlError(f"shard {path} is corrupt or truncated (its sha256 differs from "
                            "manifest.json); rewrite the shards with `fdrl shard`")


@dataclass(frozen=True)
class ShardSelection:
    """Shards of one folder to read once: all of them (`files` None), or the named tar files."""

    manifest: Manifest
    files: list[Path] | None

    @property
    def folder(self) -> Path:
        return self.manifest.folder

    @property
    def count(self) -> int:
        """The number of images the manifest lists: in all, or for the named shards."""
        return self.count_of_rank(0, 1)

    def count_of_rank(self, rank: int, world_size: int) -> int:
        """The number of images `one_pass` reads on rank `rank` of `world_size`: those of its
        round-robin share of the shards, in the manifest's order as `one_pass` deals them."""
        names = None if self.files is None else {f.name for f in self.files}
        chosen = [s for s in self.manifest.shards if names is None or s["file"] in names]
        return sum(s["count"] for s in chosen[rank::world_size])

    @property
    def file_names(self) -> list[str]:
        return [s["file"] for s in self.manifest.shards] if self.files is None else [
            f.name for f in self.files]

    def check_count(self, read: int) -> None:
        """Refuses a pass that read another number of images than the manifest lists."""
        if read != self.count:
            raise FdrlError(f"read {read} images from {self.folder}, its manifest lists {self.count}")


def select_shards(shards: list[str]) -> ShardSelection:
    """`--shards` as given: one shard folder (or its manifest.json), or .tar files of a single
    folder. Every chosen shard is present and intact (sha256) before any heavy work."""
    paths = [Path(s) for s in shards]
    if len(paths) == 1 and (paths[0].is_dir() or paths[0].name == "manifest.json"):
        folder, files = (paths[0] if paths[0].is_dir() else paths[0].parent), None
    else:
        folders = {p.parent for p in paths}
        if len(folders) != 1 or any(p.suffix != ".tar" for p in paths):
            raise FdrlError("--shards takes one shard folder (or its manifest.json), or .tar files "
                            "of a single folder")
        folder, files = folders.pop(), paths
    selection = ShardSelection(load_manifest(folder), files)
    verify(folder, files)
    return selection


def decode_png(data: bytes) -> np.ndarray:
    """A PNG as uint8 (C, H, W)."""
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(data)))
    return img[None] if img.ndim == 2 else img.transpose(2, 0, 1)


def index_shard(path: Path) -> list[tuple[int, int, int]]:
    """(sample index, byte offset, byte size) of every PNG member of one shard."""
    entries = []
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                if member.name.endswith(".png"):
                    entries.append((int(member.name[:-4]), member.offset_data, member.size))
    except (tarfile.TarError, OSError, ValueError) as err:
        raise FdrlError(f"shard {path} is corrupt or truncated ({err}); rewrite it with `fdrl shard`") from None
    return entries


def shard_labels(folder: str | os.PathLike) -> np.ndarray:
    """The label (`.cls`) of every image of a shard folder, in the images' order (int64)."""
    labels = {}
    for path in load_manifest(folder).paths:
        try:
            with tarfile.open(path) as tar:
                for member in tar:
                    if member.name.endswith(".cls"):
                        labels[int(member.name[:-4])] = int(tar.extractfile(member).read())
        except (tarfile.TarError, OSError, ValueError) as err:
            raise FdrlError(f"shard {path} is corrupt or truncated ({err}); rewrite it with "
                            "`fdrl shard`") from None
    return np.array([labels[key] for key in sorted(labels)], dtype=np.int64)


class ShardStore:
    """Images read by random access into the shards of a folder (tar headers indexed once)."""

    def __init__(self, folder: str | os.PathLike):
        self.manifest = load_manifest(folder)
        self.shape = self.manifest.shape
        self.entries: list[tuple[Path, int, int]] = []
        for path, info in zip(self.manifest.paths, self.manifest.shards):
            found = index_shard(path)
            if len(found) != info["count"]:
                raise FdrlError(f"shard {path} holds {len(found)} images, its manifest says "
                                f"{info['count']}; rewrite it with `fdrl shard`")
            self.entries += [(path, offset, size) for _, offset, size in sorted(found)]
        self._files: dict[Path, object] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, index: int) -> np.ndarray:
        path, offset, size = self.entries[index]
        f = self._files.get(path)
        if f is None:
            f = self._files[path] = open(path, "rb")
        f.seek(offset)
        return decode_png(f.read(size))

    def __getstate__(self) -> dict:  # DataLoader workers open their own file handles
        return {**self.__dict__, "_files": {}}


def _generator(*key: int) -> torch.Generator:
    return torch.Generator().manual_seed(key_seed(*key))


class TrainStream:
    """This rank's slice of global batch t: shuffled per epoch, flipped, scaled to [-1, 1],
    dequantized. A function of (seed, t) alone; the same global batch for any world size."""

    def __init__(self, store: ShardStore, global_batch: int, rank: int, world_size: int, seed: int,
                 flip: bool, dequantization: float):
        if global_batch % world_size:
            raise FdrlError(f"the global batch {global_batch} does not divide among "
                            f"{world_size} processes; choose a multiple of the world size")
        self.store, self.global_batch, self.seed = store, global_batch, seed
        self.local = slice(rank * global_batch // world_size, (rank + 1) * global_batch // world_size)
        self.flip, self.dequantization = flip, dequantization
        self._perms: dict[int, Tensor] = {}

    def _permutation(self, epoch: int) -> Tensor:
        if epoch not in self._perms:
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            self._perms[epoch] = torch.randperm(len(self.store), generator=_generator(self.seed, 0, epoch))
        return self._perms[epoch]

    def indices(self, step: int) -> Tensor:
        """Dataset indices of global batch `step` (epoch after epoch, each a fresh shuffle)."""
        n = len(self.store)
        positions = step * self.global_batch + torch.arange(self.global_batch)
        return torch.stack([self._permutation(int(p) // n)[int(p) % n] for p in positions])

    def batch(self, step: int) -> Tensor:
        """This rank's slice of global batch `step`, float32 (b, C, H, W)."""
        g = _generator(self.seed, 1, step)
        flips = torch.rand(self.global_batch, generator=g)[self.local] < 0.5
        noise = torch.randn((self.global_batch, *self.store.shape), generator=g)[self.local]
        images = np.stack([self.store.get(int(i)) for i in self.indices(step)[self.local]])
        x = torch.from_numpy(images).float() / 127.5 - 1
        if self.flip:
            x = torch.where(flips[:, None, None, None], x.flip(-1), x)
        return x + self.dequantization * noise


def one_pass(folder: str | os.PathLike, rank: int = 0, world_size: int = 1, workers: int = 0,
             batch: int = 256, files: list[Path] | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """(indices, uint8 images (B, C, H, W)) of this rank's shards, each image exactly once.

    Shards (all of the folder's, or only `files`) go to ranks round-robin, and within a rank to
    DataLoader workers; nothing is shared, so the union over ranks and workers is the dataset.
    """
    import webdataset as wds

    paths = load_manifest(folder).paths
    if files is not None:
        names = {Path(f).name for f in files}
        paths = [p for p in paths if p.name in names]
    urls = [str(p) for p in paths[rank::world_size]]
    if not urls:
        return
    for url in urls:
        if not os.path.isfile(url):
            raise FdrlError(f"shard {url} is missing; rewrite the shards with `fdrl shard`")

    def key_and_image(sample: dict) -> tuple[int, np.ndarray]:
        return int(sample["__key__"]), decode_png(sample["png"])

    pipeline = (wds.WebDataset(urls, shardshuffle=False, nodesplitter=None, empty_check=False)
                .map(key_and_image).batched(batch, collation_fn=_collate, partial=True))
    loader = torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=workers)
    try:
        yield from loader
    except (tarfile.TarError, OSError, ValueError) as err:
        raise FdrlError(f"a shard of {folder} is corrupt or truncated ({err}); rewrite it with "
                        "`fdrl shard`") from None


def _collate(samples: list[tuple[int, np.ndarray]]) -> tuple[Tensor, Tensor]:
    keys, images = zip(*samples)
    return torch.tensor(keys), torch.from_numpy(np.stack(images))
