"""`fdrl fid-ref` and `fdrl fid`: the Frechet distance of features (DESIGN.md sec. 7, 10).

    FID = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))        (Heusel et al., 2017)

Features come from a backend of `fdrl.features`, in batches on the device. As in EDM's fid.py,
each rank sums count, f and f f^T in float64, the sums are all-reduced and rank 0 writes; the
covariance is the unbiased one (`np.cov`'s, which pytorch-fid and clean-fid use). A reference
file is an .npz with `mu` and `sigma` (pytorch-fid's own names for saved statistics) and
`count`, plus what made it: backend, feature extractor, its weights and their SHA-256. `fdrl fid`
refuses a reference made by another backend, extractor or weights file. The result names the
run, flow length and config hash the chunks were generated with (their `run_info`).
"""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import torch
from torch import Tensor

from fdrl import distributed
from fdrl.errors import FdrlError
from fdrl.io import atomic_path, sha256, write_text_atomic
from fdrl.sampling import shared_run_info

# What must agree between a reference and the features it is compared with.
IDENTITY = ("backend", "feature_extractor", "weights_sha256")


class FeatureStats:
    """Running count, sum f and sum f f^T of features, in float64 on the features' device."""

    def __init__(self, dim: int, device: torch.device):
        self.count = torch.zeros((), dtype=torch.float64, device=device)
        self.sum = torch.zeros(dim, dtype=torch.float64, device=device)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    def add(self, feats: Tensor) -> None:
        f = feats.to(self.sum.device, torch.float64)
        self.count += len(f)
        self.sum += f.sum(0)
        self.outer.addmm_(f.T, f)

    def all_reduce(self) -> None:
        for t in (self.count, self.sum, self.outer):
            distributed.all_reduce_sum(t)

    def mean_and_covariance(self) -> tuple[np.ndarray, np.ndarray]:
        """The mean and the unbiased covariance (divided by n - 1, as `np.cov`), float64."""
        n = self.count.item()
        if n < 2:
            raise FdrlError(f"FID statistics need at least 2 images, got {int(n)}")
        mean = self.sum / n
        cov = (self.outer - n * torch.outer(mean, mean)) / (n - 1)
        return mean.cpu().numpy(), cov.cpu().numpy()


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6, blas_threads: int | None = 1) -> float:
    """The Frechet distance of N(mu1, sigma1) and N(mu2, sigma2), in float64.

    The algorithm of pytorch-fid's `calculate_frechet_distance` and clean-fid's
    `frechet_distance`: scipy's `sqrtm` of S_1 S_2, eps * I added to both covariances if that
    square root is not finite, a negligible imaginary part dropped. `sqrtm` can hang with many
    BLAS threads on cluster nodes, so it runs with `blas_threads` (None: unlimited).
    """
    from scipy import linalg
    from threadpoolctl import threadpool_limits

    mu1, mu2 = np.atleast_1d(np.float64(mu1)), np.atleast_1d(np.float64(mu2))
    sigma1, sigma2 = np.atleast_2d(np.float64(sigma1)), np.atleast_2d(np.float64(sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise FdrlError(f"feature dimensions differ: {mu1.shape} and {mu2.shape}")
    diff = mu1 - mu2
    with threadpool_limits(limits=blas_threads), np.errstate(all="ignore"):
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(len(sigma1)) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise FdrlError(f"the covariances' product has no real square root (imaginary part "
                            f"{np.abs(covmean.imag).max():.3g}); too few images for the feature size?")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def write_reference(out: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray, count: int,
                    meta: dict) -> None:
    """Writes reference statistics and what made them (strings) to `out` atomically."""
    with atomic_path(out) as tmp, open(tmp, "wb") as f:  # a file object: savez adds no suffix
        np.savez(f, mu=mu, sigma=sigma, count=np.int64(count),
                 **{k: np.str_(v if isinstance(v, str) else json.dumps(v)) for k, v in meta.items()})


def load_reference(path: str | os.PathLike) -> dict:
    """A reference file as a dict: mu, sigma (float64), count, and its string fields."""
    try:
        with np.load(path) as z:
            ref = {k: z[k] for k in z.files}
        ref = {k: (v.item() if v.ndim == 0 and k != "count" else v) for k, v in ref.items()}
        ref["count"] = int(ref["count"])
        missing = [k for k in ("mu", "sigma", "image_shape", *IDENTITY) if k not in ref]
    except (OSError, ValueError, zipfile.BadZipFile, KeyError) as err:
        raise FdrlError(f"{path} is not a reference statistics file ({err}); make it with "
                        "`fdrl fid-ref`") from None
    if missing:
        raise FdrlError(f"{path} lacks {', '.join(missing)}: not made by `fdrl fid-ref`; remake it")
    return ref


def _accumulate(extractor, batches, device: torch.device, total: int | None, desc: str,
                show: bool) -> FeatureStats:
    from tqdm import tqdm

    stats = FeatureStats(extractor.dim, device)
    with tqdm(total=total, desc=desc, unit="img", disable=not show) as bar:
        for images in batches:
            stats.add(extractor(images))
            bar.update(len(images))
    stats.all_reduce()
    return stats


def fid_ref(shards: list[str], backend: str, out: str | os.PathLike, weights=None, batch: int = 64,
            workers: int = 0, device: str | None = None) -> dict | None:
    """Reference statistics of the shards' images (every image once, over all ranks); rank 0
    writes `out` and gets its metadata back, other ranks None."""
    from fdrl.data import load_manifest, one_pass
    from fdrl.features import load_extractor
    from fdrl.prior_fit import resolve_shards
    from fdrl.shards import verify

    folder, files = resolve_shards(shards)
    manifest = load_manifest(folder)
    verify(folder, files)  # every shard present and intact before any heavy work
    dist = distributed.init(device)
    extractor = load_extractor(backend, weights, dist.device)
    expected = manifest.count if files is None else sum(
        s["count"] for s in manifest.shards if s["file"] in {f.name for f in files})
    batches = (images for _, images in one_pass(folder, dist.rank, dist.world_size, workers, batch, files))
    stats = _accumulate(extractor, batches, dist.device, expected // dist.world_size,
                        f"fid-ref {backend}", dist.is_main)
    count = int(stats.count.item())  # all-reduced: every rank fails alike, none waits forever
    if count != expected:
        raise FdrlError(f"read {count} images from {folder}, its manifest lists {expected}")
    meta = None
    if dist.is_main:
        mu, sigma = stats.mean_and_covariance()
        meta = {**extractor.describe(), "n_images": count, "dataset": manifest.dataset,
                "image_shape": list(manifest.shape), "shards": str(folder),
                "shard_files": [s["file"] for s in manifest.shards] if files is None else
                [f.name for f in files]}
        write_reference(out, mu, sigma, count, meta)
    distributed.barrier()
    return meta


def _npy_header(z: zipfile.ZipFile, name: str) -> tuple[tuple, np.dtype]:
    """Shape and dtype of one array of an .npz, read without loading it."""
    with z.open(f"{name}.npy") as f:
        version = np.lib.format.read_magic(f)
        fmt = np.lib.format
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = read(f)
    return shape, dtype


def check_samples(paths: list[str | os.PathLike]) -> tuple[int, tuple[int, int, int]]:
    """Checks every chunk (uint8 NHWC `images` with one `seeds` entry each, one image shape, no
    seed twice) before any heavy work; returns the number of images and their (C, H, W)."""
    shapes, seeds = {}, []
    for path in paths:
        try:
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


def _sample_batches(paths, rank: int, world_size: int, batch: int):
    """This rank's images (global index = rank mod world size), uint8 (B, C, H, W) batches."""
    offset = 0
    for path in paths:
        with np.load(path) as z:
            images = z["images"]
        mine = images[(rank - offset) % world_size::world_size]
        offset += len(images)
        for start in range(0, len(mine), batch):
            yield torch.from_numpy(np.ascontiguousarray(mine[start:start + batch].transpose(0, 3, 1, 2)))


def check_reference(ref: dict, ref_path, backend: str, extractor=None) -> None:
    """Refuses a reference made by another backend, feature extractor or weights file."""
    if ref["backend"] != backend:
        raise FdrlError(f"{ref_path} was made with backend {ref['backend']}, not {backend}: make "
                        f"the reference with `fdrl fid-ref --backend {backend}`")
    if extractor is not None:
        mine = extractor.describe()
        for key in IDENTITY[1:]:
            if ref[key] != mine[key]:
                raise FdrlError(f"{ref_path} was made with another feature extractor ({key} "
                                f"{ref[key]!r}, here {mine[key]!r}); remake the reference with "
                                "the same weights")


def fid(samples: list[str | os.PathLike], ref_path: str | os.PathLike, backend: str,
        out: str | os.PathLike, weights=None, batch: int = 64, device: str | None = None) -> dict | None:
    """FID of the sample chunks against the reference; rank 0 writes the JSON result to `out`
    and returns it, other ranks None."""
    from fdrl.features import load_extractor

    n, shape = check_samples(samples)
    run = shared_run_info(samples)
    ref = load_reference(ref_path)
    check_reference(ref, ref_path, backend)
    ref_shape = tuple(json.loads(ref["image_shape"]))
    if shape != ref_shape:
        raise FdrlError(f"the samples are {shape} images, the reference {ref_path} was made from "
                        f"{ref_shape} images")
    dist = distributed.init(device)
    extractor = load_extractor(backend, weights, dist.device)
    check_reference(ref, ref_path, backend, extractor)
    stats = _accumulate(extractor, _sample_batches(samples, dist.rank, dist.world_size, batch),
                        dist.device, n // dist.world_size, f"fid {backend}", dist.is_main)
    result = None
    if dist.is_main:
        mu, sigma = stats.mean_and_covariance()
        value = frechet_distance(mu, sigma, ref["mu"], ref["sigma"])
        result = {"fid": value, **extractor.describe(), "n_images": n,
                  "samples": [str(p) for p in samples], "reference": str(ref_path),
                  "reference_sha256": sha256(ref_path), "reference_n_images": ref["count"],
                  "reference_dataset": ref.get("dataset"), "run": run}
        write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    distributed.barrier()
    return result
