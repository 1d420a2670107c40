"""`fdrl fid-ref` and `fdrl fid`: the Frechet distance of features (docs/design.md#evaluation).

    FID = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))        (Heusel et al., 2017)

Features come from a backend of `fdrl.features`, in batches on the device, into float64 moments
summed over ranks (`fdrl.moments`); rank 0 writes. One pass over the images serves several
backends: each batch goes through every backend's network, and each backend gets its own
reference and result file (a process start-up, imports included, and a read of the images per
backend fewer). The covariance is the unbiased one (`np.cov`'s,
which pytorch-fid and clean-fid use). A reference file is an .npz with `mu` and `sigma`
(pytorch-fid's own names for saved statistics) and `count`, plus what made it: backend, feature
extractor, its weights and their SHA-256. `fdrl fid` refuses a reference made by another
backend, extractor or weights file. Its JSON result names the run, flow length and config hash
the chunks were generated with (their `run_info`), or, for the real images of a held-out split
(the floor the metric allows: real against real), that split; `fdrl.result_files.load_fid_result` reads it back.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from fdrl import distributed
from fdrl.chunks import check_chunks, chunk_batches, run_info
from fdrl.data import manifest_sha256, one_pass, select_shards
from fdrl.datasets import DATASETS
from fdrl.errors import FdrlError
from fdrl.features import Extractor, load_extractor
from fdrl.io import atomic_path, check_zip, sha256, write_text_atomic
from fdrl.moments import Moments
from fdrl.precision import FP32, Precision
from fdrl.progress import progress

# What must agree between a reference and the features it is compared with.
IDENTITY = ("backend", "feature_extractor", "weights_sha256", "precision")


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     rows2: np.ndarray | None = None, blas_threads: int | None = 1) -> float:
    """The Frechet distance of N(mu1, sigma1) and N(mu2, sigma2), in float64.

    pytorch-fid and clean-fid take Tr((S_1 S_2)^(1/2)) from scipy's `sqrtm` of the non-symmetric
    S_1 S_2. The trace needs only the eigenvalues of S_1 S_2, which are those of the symmetric
    positive semi-definite S_1^(1/2) S_2 S_1^(1/2); two symmetric eigendecompositions give them,
    4-5x faster than `sqrtm` for 2048-d features (45 s -> 9 s on one core of an older CPU), and
    real by construction (round-off below 0 is clipped). On full-rank covariances the two agree
    to about 1e-12; on the singular ones of a few images, to about 1e-7.

    Given the n rows that S_2 is the unbiased covariance of (`rows2`, n <= d), S_2 = B B^T with
    B = (rows2 - mu2)^T / sqrt(n - 1), and the nonzero eigenvalues of S_1 S_2 are those of the
    n x n matrix B^T S_1 B: no d x d eigendecomposition at all (2048-d features of 8 images:
    about 2.4 s -> 0.02 s on one core). The eigensolvers run with `blas_threads` BLAS threads
    (None: unlimited), as `sqrtm` can hang with many on cluster nodes.
    """
    from threadpoolctl import threadpool_limits

    mu1, mu2 = np.atleast_1d(np.float64(mu1)), np.atleast_1d(np.float64(mu2))
    sigma1, sigma2 = np.atleast_2d(np.float64(sigma1)), np.atleast_2d(np.float64(sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise FdrlError(f"feature dimensions differ: {mu1.shape} and {mu2.shape}")
    diff = mu1 - mu2
    with threadpool_limits(limits=blas_threads):
        if rows2 is not None:
            b = (np.float64(rows2) - mu2).T / np.sqrt(len(rows2) - 1)
            eigenvalues = np.linalg.eigvalsh(b.T @ sigma1 @ b)
        else:
            w, v = np.linalg.eigh(sigma1)
            root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T  # S_1^(1/2)
            eigenvalues = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    trace_covmean = np.sqrt(np.clip(eigenvalues, 0, None)).sum()
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_covmean)


def write_reference(out: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray, count: int,
                    meta: dict) -> None:
    """Writes reference statistics and what made them (strings) to `out` atomically."""
    with atomic_path(out) as tmp, open(tmp, "wb") as f:  # a file object: savez adds no suffix
        np.savez(f, mu=mu, sigma=sigma, count=np.int64(count),
                 **{k: np.str_(v if isinstance(v, str) else json.dumps(v)) for k, v in meta.items()})


def load_reference(path: str | os.PathLike) -> dict:
    """A reference file as a dict: mu, sigma (float64), count, and its string fields."""
    try:
        check_zip(path)
        with np.load(path) as z:
            ref = {k: z[k] for k in z.files}
        ref = {k: (v.item() if v.ndim == 0 and k != "count" else v) for k, v in ref.items()}
        ref["count"] = int(ref["count"])
        missing = [k for k in ("mu", "sigma", "image_shape", *IDENTITY) if k not in ref]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise FdrlError(f"{path} is not a reference statistics file ({err}); make it with "
                        "`fdrl fid-ref`") from None
    if missing:
        raise FdrlError(f"{path} lacks {', '.join(missing)}: not made by `fdrl fid-ref`; remake it")
    dim = ref["mu"].shape
    if len(dim) != 1 or ref["sigma"].shape != dim * 2:
        raise FdrlError(f"{path} holds a mean of shape {dim} and a covariance of shape "
                        f"{ref['sigma'].shape}, not (d,) and (d, d); remake it with `fdrl fid-ref`")
    return ref


def _extractors(backends: Sequence[str], weights: Mapping[str, Path | None] | None,
                device: torch.device, precision: Precision) -> list[Extractor]:
    """Each backend's feature extractor, its weights from `weights` (None: the library's cache)."""
    twice = sorted({b for b in backends if list(backends).count(b) > 1})
    if twice:
        raise FdrlError(f"--backend names {', '.join(twice)} more than once; give each backend once")
    return [load_extractor(b, (weights or {}).get(b), device, precision) for b in backends]


def _one_path_each(backends: Sequence[str], paths: Sequence, option: str) -> None:
    """Refuses a list of paths that is not one per backend, in the order of --backend."""
    if len(paths) != len(backends):
        raise FdrlError(f"{option} takes one path per --backend, in the same order; got "
                        f"{len(paths)} for {' '.join(backends)}")


def _statistics(extractors: Sequence[Extractor], batches, device: torch.device,
                total: int | None, desc: str, show: bool,
                rows_up_to: int | None = None) -> list[Moments]:
    """Each extractor's features' moments over every rank's batches (all-reduced); every batch
    is read once and goes through each extractor. Given `rows_up_to`, the number of images of
    all ranks, the features themselves are kept too (gathered on every rank) where those are at
    most the features' dimension."""
    moments = [Moments(e.dim, device, keep_rows=rows_up_to is not None and rows_up_to <= e.dim)
               for e in extractors]
    with progress(total, desc, "img", show) as bar:
        for images in batches:
            for extractor, m in zip(extractors, moments):
                m.add(extractor(images))
            bar.update(len(images))
    for m in moments:
        m.all_reduce()
    return moments


def _mean_and_covariance(moments: Moments) -> tuple[np.ndarray, np.ndarray]:
    """The features' mean and unbiased covariance (as `np.cov`), float64 numpy."""
    if moments.count.item() < 2:
        raise FdrlError(f"FID statistics need at least 2 images, got {int(moments.count.item())}")
    mean, cov = moments.mean_and_covariance(ddof=1)
    return mean.cpu().numpy(), cov.cpu().numpy()


def distance_to_reference(moments: Moments, ref: dict) -> float:
    """The FID of features' moments (all-reduced) against a loaded reference."""
    rows = None if moments.rows is None else moments.rows.cpu().numpy()
    mu, sigma = _mean_and_covariance(moments)
    return frechet_distance(ref["mu"], ref["sigma"], mu, sigma, rows2=rows)


def fid_ref(shards: list[str], backends: Sequence[str], outs: Sequence[str | os.PathLike],
            weights: Mapping[str, Path | None] | None = None, batch: int = 64, workers: int = 0,
            device: str | None = None, precision: Precision = FP32) -> list[dict] | None:
    """Reference statistics of the shards' images (every image once, over all ranks) for each
    backend, its weights from `weights` (`features.weights_by_backend`); rank 0 writes each
    backend's to its `outs` entry and gets their metadata back, other ranks None."""
    _one_path_each(backends, outs, "--out")
    selection = select_shards(shards)
    dist = distributed.init(device)
    extractors = _extractors(backends, weights, dist.device, precision)
    batches = (images for _, images in one_pass(selection.folder, dist.rank, dist.world_size,
                                                workers, batch, selection.files))
    moments = _statistics(extractors, batches, dist.device,
                          selection.count_of_rank(dist.rank, dist.world_size),
                          f"fid-ref {'+'.join(backends)}", dist.is_main)
    count = int(moments[0].count.item())
    selection.check_count(count)  # all-reduced: every rank fails alike, none waits forever
    metas = None
    if dist.is_main:
        data = {"n_images": count, "dataset": selection.manifest.dataset,
                "manifest_sha256": manifest_sha256(selection.folder),
                "image_shape": list(selection.manifest.shape), "shards": str(selection.folder),
                "shard_files": selection.file_names}
        metas = []
        for extractor, m, out in zip(extractors, moments, outs):
            mu, sigma = _mean_and_covariance(m)
            metas.append({**extractor.describe(), **data})
            write_reference(out, mu, sigma, count, metas[-1])
    distributed.barrier()
    return metas


def check_reference(ref: dict, ref_path, backend: str, extractor: Extractor | None = None) -> None:
    """Refuses a reference made by another backend, feature extractor, weights file or precision."""
    if ref["backend"] != backend:
        raise FdrlError(f"{ref_path} was made with backend {ref['backend']}, not {backend}: make "
                        f"the reference with `fdrl fid-ref --backend {backend}`")
    if extractor is not None:
        if ref["mu"].shape != (extractor.dim,):
            raise FdrlError(f"{ref_path} holds statistics of {ref['mu'].shape[0]}-d features, "
                            f"{backend}'s are {extractor.dim}-d; remake it with `fdrl fid-ref`")
        mine = extractor.describe()
        for key in IDENTITY[1:]:
            if ref[key] != mine[key]:
                raise FdrlError(f"{ref_path} was made with another feature extractor ({key} "
                                f"{ref[key]!r}, here {mine[key]!r}); remake the reference with "
                                "the same weights and --precision")


def check_reference_data(ref: dict, ref_path, run: dict | None) -> None:
    """Refuses a reference of other data than the samples' run was trained on: its training set
    (the same manifest, where both record it) or a split held out from it (Table 4's targets)."""
    if not run or not ref.get("dataset"):
        return
    trained, given = run["dataset"], ref["dataset"]
    if given != trained and (given not in DATASETS or DATASETS[given].held_out_from != trained):
        raise FdrlError(f"{ref_path} was made from {given}, but the samples' run "
                        f"{run['run']} was trained on {trained}: make the reference from the "
                        f"run's own data with `fdrl fid-ref`")
    made_from, trained_on = ref.get("manifest_sha256"), run.get("data_manifest_sha256")
    if given == trained and made_from and trained_on and made_from != trained_on:
        raise FdrlError(f"{ref_path} was made from other shards of {given} than the run "
                        f"{run['run']} trained on (manifest sha256 {made_from[:12]}... against "
                        f"{trained_on[:12]}...): remake it from the run's shards with `fdrl fid-ref`")


def _scored_images(samples, held_out, refs: list[dict], ref_paths):
    """What `fid` scores, checked against the loaded references: (number of images, image
    shape, their origin for the result, the held-out shard selection or None)."""
    if samples:
        n, shape = check_chunks(samples)
        origin = {"samples": [str(p) for p in samples], "run": run_info(samples)}
        for ref, path in zip(refs, ref_paths):
            check_reference_data(ref, path, origin["run"])
        return n, shape, origin, None
    selection = select_shards(held_out)
    dataset = selection.manifest.dataset
    held_out_splits = [name for name, ds in DATASETS.items() if ds.held_out_from]
    if dataset not in held_out_splits or any(dataset == ref.get("dataset") for ref in refs):
        raise FdrlError(f"the shards in {selection.folder} are {dataset}, not a held-out split "
                        f"other than the reference's own images; --shards takes one of "
                        f"{', '.join(held_out_splits)}")
    origin = {"held_out": {"dataset": dataset, "shards": str(selection.folder),
                           "shard_files": selection.file_names}}
    return selection.count, selection.manifest.shape, origin, selection


def fid(refs: Sequence[str | os.PathLike], backends: Sequence[str],
        outs: Sequence[str | os.PathLike], samples: list[str | os.PathLike] = (),
        held_out: list[str] = (), weights: Mapping[str, Path | None] | None = None,
        batch: int = 64, device: str | None = None, precision: Precision = FP32) -> list[dict] | None:
    """FID of either sample chunks (`samples`) or the real images of a held-out split's shards
    (`held_out`) for each backend against its reference (`refs`, one per backend, in order), its
    weights from `weights` (`features.weights_by_backend`); rank 0 writes each backend's JSON
    result to its `outs` entry and returns them, other ranks None. Every reference is checked
    before any image is read."""
    _one_path_each(backends, refs, "--ref")
    _one_path_each(backends, outs, "--out")
    if bool(samples) == bool(held_out):
        raise FdrlError("fdrl fid scores either sample chunks (--samples) or held-out real "
                        "images (--shards), one of the two")
    loaded = [load_reference(path) for path in refs]
    for ref, path, backend in zip(loaded, refs, backends):
        check_reference(ref, path, backend)
    n, shape, origin, selection = _scored_images(samples, held_out, loaded, refs)
    for ref, path in zip(loaded, refs):
        ref_shape = tuple(json.loads(ref["image_shape"]))
        if shape != ref_shape:
            named = samples[0] if samples else held_out[0]
            raise FdrlError(f"the images of {named}{' and the rest' if len(samples) > 1 else ''} "
                            f"are {shape}, the reference {path} was made from {ref_shape} images")
    dist = distributed.init(device)
    extractors = _extractors(backends, weights, dist.device, precision)
    for ref, path, backend, extractor in zip(loaded, refs, backends, extractors):
        check_reference(ref, path, backend, extractor)
    if samples:
        batches = chunk_batches(samples, dist.rank, dist.world_size, batch)
        mine = len(range(dist.rank, n, dist.world_size))  # global index = rank mod world size
    else:
        batches = (images for _, images in one_pass(selection.folder, dist.rank, dist.world_size,
                                                    0, batch, selection.files))
        mine = selection.count_of_rank(dist.rank, dist.world_size)
    moments = _statistics(extractors, batches, dist.device, mine, f"fid {'+'.join(backends)}",
                          dist.is_main, n)
    if held_out:
        selection.check_count(int(moments[0].count.item()))
    results = None
    if dist.is_main:
        results = []
        for extractor, m, ref, path, out in zip(extractors, moments, loaded, refs, outs):
            results.append({"fid": distance_to_reference(m, ref), **extractor.describe(),
                            "n_images": n, **origin, "reference": str(path),
                            "reference_sha256": sha256(path), "reference_n_images": ref["count"],
                            "reference_dataset": ref.get("dataset")})
            write_text_atomic(out, json.dumps(results[-1], indent=2) + "\n")
    distributed.barrier()
    return results
