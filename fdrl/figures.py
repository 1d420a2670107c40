"""The paper's figures as PNG files, drawn from the files the experiments wrote.

The 2-D figures (2, 3, 10) read `fdrl toy`'s samples; Fig. 11 reads priors; Figs. 4 and 6 read
sample chunks, Fig. 5 FID results and Fig. 6's trade-off `fdrl classify` results; Figs. 7, 8 and
9 flow a few images of a trained run themselves, and Fig. 12 searches the training shards for
each sample's nearest images.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from fdrl.errors import FdrlError
from fdrl.images import tile, to_uint8
from fdrl.io import atomic_path

BLUE, ORANGE = "tab:blue", "tab:orange"


def _load(path: str | os.PathLike, *keys: str) -> dict:
    if not os.path.isfile(path):
        raise FdrlError(f"no samples file at {path}: run `fdrl toy` for it first")
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in keys if k not in data]
        if missing:
            raise FdrlError(f"{path} lacks {', '.join(missing)}: it was not written by this experiment")
        return {k: data[k] for k in data.files}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on cluster nodes
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: str | os.PathLike) -> None:
    plt = _pyplot()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=Path(out).suffix.lstrip(".") or "png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def _legend_handles() -> list:
    from matplotlib.lines import Line2D

    dot = dict(ls="", marker="o", markersize=5)
    return [Line2D([], [], c=BLUE, label="prior q'", **dot),
            Line2D([], [], c=ORANGE, label="flowed", **dot),
            Line2D([], [], c="k", ls="", marker="*", markersize=10, label="mean of p")]


def _scatter(ax, prior, x, title, lims=None, target=None):
    ax.scatter(*prior.T, s=2, c=BLUE, alpha=0.5)
    ax.scatter(*x.T, s=2, c=ORANGE, alpha=0.5)
    if target is not None:
        ax.scatter(*target, marker="*", s=150, c="k")
    if lims is not None:
        ax.set_xlim(*lims)
        ax.set_ylim(*lims)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)


def fig2(inputs: list[str], out: str) -> None:
    """Fig. 2: the stale estimator flows q to a near p (a) but not to a far one (b)."""
    plt = _pyplot()
    if len(inputs) != 2:
        raise FdrlError("fig2 takes two samples files: stale_near, then stale_far")
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5))
    for ax, path, tag in zip(axes, inputs, "ab"):
        d = _load(path, "x", "prior", "target", "flow_steps", "value")
        m = float(d["target"][0])
        _scatter(ax, d["prior"], d["x"], f"({tag}) p = N({m:g}, 0.1 I), K = {int(d['flow_steps'])}: "
                 f"mean error {float(d['value']):.2f}", lims=(-1.5, m + 2.5), target=d["target"])
    axes[0].legend(handles=_legend_handles(), loc="upper left", fontsize=8)
    _save(fig, out)


def fig3(inputs: list[str], out: str) -> None:
    """Fig. 3: FDRL on the far pair: flowed samples during training, and their mean's path."""
    plt = _pyplot()
    if len(inputs) != 1:
        raise FdrlError("fig3 takes one samples file: fdrl_far")
    d = _load(inputs[0], "prior", "target", "snapshot_steps", "snapshots", "mean_trajectory")
    taus, m = d["snapshot_steps"], float(d["target"][0])
    fig = plt.figure(figsize=(3.2 * len(taus), 6.4))
    grid = fig.add_gridspec(2, len(taus))
    for i, (tau, snap) in enumerate(zip(taus, d["snapshots"])):
        ax = fig.add_subplot(grid[0, i])
        _scatter(ax, d["prior"][: len(snap)], snap, f"tau = {int(tau)}", lims=(-1.5, m + 1.5),
                 target=d["target"])
    ax = fig.add_subplot(grid[1, :])
    path = d["mean_trajectory"]
    ax.plot(np.arange(1, len(path) + 1), path[:, 0], label="mean, x1")
    ax.plot(np.arange(1, len(path) + 1), path[:, 1], label="mean, x2")
    ax.axhline(m, c="k", ls="--", lw=1, label="mean of p")
    ax.set_xlabel("training step tau")
    ax.set_ylabel("mean of flowed samples")
    ax.legend(fontsize=8)
    _save(fig, out)


def fig10(inputs: list[str], out: str) -> None:
    """Fig. 10: swiss roll samples for every pairing, with the data for comparison."""
    plt = _pyplot()

    titles = ["LSIF-chi2", "LR-KL", "LR-JS", "LR-logD"]
    if len(inputs) != len(titles):
        raise FdrlError("fig10 takes four samples files: lsif-pearson, lr-kl, lr-js, lr-logd")
    data = [_load(p, "x", "target_samples", "value") for p in inputs]
    fig, axes = plt.subplots(1, 5, figsize=(17, 3.6))
    target = data[0]["target_samples"]
    axes[0].scatter(*target.T, s=1, c=BLUE)
    axes[0].set_title("data (swiss roll)", fontsize=9)
    for ax, d, title in zip(axes[1:], data, titles):
        ax.scatter(*d["x"].T, s=1, c=ORANGE)
        ax.set_title(f"{title}: energy distance {float(d['value']):.3f}", fontsize=9)
    for ax in axes:
        ax.set_xlim(-2, 2.2)
        ax.set_ylim(-2, 2.2)
        ax.set_aspect("equal")
    _save(fig, out)


def fig11(inputs: list[str], out: str, n: int = 8, seed: int = 0) -> None:
    """Fig. 11: samples of each dataset's data-dependent prior (one row per prior.pt)."""
    from fdrl.noise import GeneratorNoise
    from fdrl.priors import GaussianPrior

    plt = _pyplot()
    fig, axes = plt.subplots(len(inputs), 1, figsize=(1.2 * n, 1.4 * len(inputs)), squeeze=False)
    for ax, path in zip(axes[:, 0], inputs):
        x = GaussianPrior.load(path).sample(n, GeneratorNoise(seed))  # (n, C, H, W) in [-1, 1]
        row = tile(to_uint8(x), columns=n)
        ax.imshow(row[..., 0] if row.shape[-1] == 1 else row, cmap="gray", vmin=0, vmax=255)
        ax.set_axis_off()
        ax.set_title(f"{Path(path).parent.name}: prior samples", fontsize=9)
    _save(fig, out)


def _grid(ax, images: np.ndarray, cols: int, title: str = "") -> None:
    """uint8 NHWC images tiled `cols` per row, one pixel of white between them."""
    canvas = tile(images, cols, gap=1, fill=255)
    ax.imshow(canvas[..., 0] if canvas.shape[-1] == 1 else canvas, cmap="gray", vmin=0, vmax=255,
              interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)


def _run_title(info: dict | None) -> str:
    if not info:
        return ""
    return (f"{info['run']}: {info['dataset']}, {info['prior']} prior, {info['pairing']}, "
            f"{info['train_steps']} training steps, K + kappa = {info['steps']}")


def fig4(inputs: list[str], out: str, n: int = 64) -> None:
    """Fig. 4 (and 14-21): uncurated samples of one run, the first `n` seeds of its chunks."""
    from fdrl.chunks import read_chunks

    plt = _pyplot()
    images, seeds, info = read_chunks(inputs)
    images = images[np.argsort(seeds, kind="stable")][:n]
    cols = int(np.ceil(np.sqrt(len(images))))
    fig, ax = plt.subplots(figsize=(6, 6.3))
    shown = np.sort(seeds)[:len(images)]
    _grid(ax, images, cols, f"uncurated samples of seeds {shown[0]}-{shown[-1]}\n" + _run_title(info))
    _save(fig, out)


def fig5(inputs: list[str], out: str) -> None:
    """Fig. 5: FID against the total flow length K + kappa, one model, one result per length and
    feature extractor; a panel per feature extractor (their FIDs are on different scales)."""
    from fdrl.result_files import load_fid_result

    plt = _pyplot()
    curves, runs = {}, set()
    for path in inputs:
        result = load_fid_result(path)
        run = result.get("run") or {}
        if "steps" not in run:
            raise FdrlError(f"{path} names no flow length: its samples were not made by `fdrl sample`")
        points = curves.setdefault(result["feature_extractor"], {})
        if run["steps"] in points:
            raise FdrlError(f"{path} gives a second FID at flow length {run['steps']} for "
                            f"{result['feature_extractor']}; give one result per length")
        points[run["steps"]] = (result["fid"], run["flow_steps"])
        runs.add((run["run"], run["config_hash"]))
    if len(runs) != 1:
        raise FdrlError(f"fig5 takes FID results of one run; got runs {sorted(runs)}")
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.6), squeeze=False)
    for ax, (extractor, points) in zip(axes[0], curves.items()):
        steps = sorted(points)
        ax.plot(steps, [points[n][0] for n in steps], "o-")
        trained = points[steps[0]][1]
        ax.axvline(trained, c="k", ls="--", lw=1, label=f"K = {trained} (training)")
        ax.set_xlabel("total flow length K + kappa")
        ax.set_ylabel(f"FID ({extractor})", fontsize=8)
        ax.set_title(f"{next(iter(runs))[0]}: FID against flow length", fontsize=9)
        ax.legend(fontsize=8)
    _save(fig, out)


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck")


def fig6(inputs: list[str], out: str, per_row: int = 10) -> None:
    """Fig. 6: class-conditional samples (Eq. 31), one labelled row per class, the first
    `per_row` seeds of each (fewer where a class has fewer)."""
    from fdrl.chunks import read_chunks, read_labels

    plt = _pyplot()
    images, seeds, info = read_chunks(inputs)
    labels = read_labels(inputs)
    if labels is None or not (info or {}).get("guidance"):
        raise FdrlError("fig6 takes the chunks of class-conditional samples (`fdrl sample --guide`)")
    order = np.argsort(seeds, kind="stable")
    images, labels = images[order], labels[order]
    classes = sorted(set(labels.tolist()))
    names = CIFAR10_CLASSES if images.shape[-1] == 3 else [str(n) for n in range(10)]
    per_row = min(per_row, *(int((labels == n).sum()) for n in classes))
    rows = [images[labels == n][:per_row] for n in classes]
    fig, ax = plt.subplots(figsize=(1.0 * per_row + 1, 1.0 * len(classes) + 0.8))
    _grid(ax, np.concatenate(rows), per_row)
    height = images.shape[1] + 1
    for i, n in enumerate(classes):
        ax.text(-2, i * height + height / 2, names[n], ha="right", va="center", fontsize=9)
    g = info["guidance"]
    ax.set_title(f"class-conditional samples: guide {Path(g['path']).name}, phi = {g['phi']:g}, "
                 f"step factor c = {g['step_factor']:g}\n" + _run_title(info), fontsize=9)
    _save(fig, out)


def fig6_tradeoff(inputs: list[str], out: str) -> None:
    """Fig. 6's trade-off: over phi (one line per step factor c), the mean fraction of
    conditional samples assigned to their class, and their mean per-class classifier FID as a
    multiple of the unguided samples' (`fdrl classify` results: the unguided one and the
    guided settings)."""
    from fdrl.tables import class_conditional

    plt = _pyplot()
    rows = [r for r in class_conditional(inputs) if r["class"] == "mean"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    for (guide, c) in sorted({(r["guide"], r["step_factor"]) for r in rows}):
        line = sorted((float(r["phi"]), float(r["accuracy"]), float(r["fid_ratio"] or "nan"))
                      for r in rows if (r["guide"], r["step_factor"]) == (guide, c))
        label = f"{guide} guide, c = {c:g}"
        left.plot([p[0] for p in line], [p[1] for p in line], "o-", label=label)
        right.plot([p[0] for p in line], [p[2] for p in line], "o-", label=label)
    left.axhline(0.9, c="k", ls="--", lw=1, label="bar: 90%")
    right.axhline(2.5, c="k", ls="--", lw=1, label="bar: 2.5x")
    for ax, y in ((left, "mean accuracy on the conditioned class"),
                  (right, "per-class FID / unguided per-class FID")):
        ax.set_xscale("log")
        ax.set_xlabel("phi")
        ax.set_ylabel(y, fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle("class guidance: accuracy against naturalness, over phi and the step factor",
                 fontsize=9)
    _save(fig, out)


def fig7(inputs: list[str], out: str, device: str | None = None, rows: int = 8,
         columns: int = 9) -> None:
    """Fig. 7: image-to-image translation, one test source image per row (left) and frames of
    its flow into the target domain. Inputs: a run trained with `prior: source`, then the
    source shard folder (e.g. cat2dog_testA)."""
    from fdrl.distributed import pick_device
    from fdrl.sampling import Sampler
    from fdrl.translation import Translator

    plt = _pyplot()
    if len(inputs) != 2:
        raise FdrlError("fig7 takes a run folder (trained with `prior: source`) and the source "
                        "shard folder")
    translator = Translator(Sampler.load(inputs[0], pick_device(device)), inputs[1])
    steps = translator.sampler.params.steps
    every = max(1, -(-steps // (columns - 1)))
    frames = translator.process(list(range(rows)), every)
    images = np.stack([to_uint8(f) for f in frames], axis=1)
    fig, ax = plt.subplots(figsize=(1.1 * len(frames), 1.2 * rows))
    shown = [0, *range(every, steps, every), steps][:len(frames)]
    _grid(ax, images.reshape(-1, *images.shape[2:]), len(frames),
          f"translation of {translator.info['translation']['source_dataset']} images 0-{rows - 1}: "
          f"flow steps {', '.join(map(str, shown))} (left: source)\n"
          + _run_title(translator.sampler.run_info))
    _save(fig, out)


def _sampler(inputs: list[str], name: str, device: str | None):
    from fdrl.distributed import pick_device
    from fdrl.sampling import Sampler

    if len(inputs) != 1:
        raise FdrlError(f"{name} takes one trained run folder (holding final.pt)")
    return Sampler.load(inputs[0], pick_device(device))


def fig8(inputs: list[str], out: str, device: str | None = None, rows: int = 6,
         columns: int = 9) -> None:
    """Fig. 8: the flow process, from a prior sample (left) to the K + kappa-th step (right)."""
    plt = _pyplot()
    sampler = _sampler(inputs, "fig8", device)
    every = max(1, -(-sampler.params.steps // (columns - 1)))
    frames = sampler.process(list(range(rows)), every)  # each (rows, C, H, W)
    images = np.stack([to_uint8(f) for f in frames], axis=1)  # (rows, frames, H, W, C)
    fig, ax = plt.subplots(figsize=(1.1 * len(frames), 1.2 * rows))
    steps = [0, *range(every, sampler.params.steps, every), sampler.params.steps]
    _grid(ax, images.reshape(-1, *images.shape[2:]), len(frames),
          f"flow steps {', '.join(map(str, steps[:len(frames)]))} (left: prior)\n"
          + _run_title(sampler.run_info))
    _save(fig, out)


def fig9(inputs: list[str], out: str, device: str | None = None, pairs: int = 4,
         points: int = 10) -> None:
    """Fig. 9: samples along the spherical path in prior space between two samples (the ends)."""
    plt = _pyplot()
    sampler = _sampler(inputs, "fig9", device)
    rows = [to_uint8(sampler.interpolate(2 * i, 2 * i + 1, points)) for i in range(pairs)]
    fig, ax = plt.subplots(figsize=(1.1 * points, 1.2 * pairs))
    _grid(ax, np.concatenate(rows), points, "interpolation in prior space between seeds "
          "(0, 1), (2, 3), ...\n" + _run_title(sampler.run_info))
    _save(fig, out)


def nearest_neighbours(queries, batches, embed, k: int):
    """The k training images nearest each query by L2 distance between `embed`dings, streamed
    over `batches` of training images: (distances, indices into the concatenated batches), both
    (queries, k), nearest first."""
    import torch

    keys = embed(queries)
    dist = torch.zeros(len(queries), 0, dtype=keys.dtype)
    index = torch.zeros(len(queries), 0, dtype=torch.long)
    seen = 0
    for batch in batches:
        d = torch.cat([dist, torch.cdist(keys, embed(batch))], dim=1)
        i = torch.cat([index, torch.arange(seen, seen + len(batch)).expand(len(queries), -1)], dim=1)
        top = d.topk(min(k, d.shape[1]), largest=False)
        dist, index, seen = top.values, i.gather(1, top.indices), seen + len(batch)
    return dist, index


def fig12(inputs: list[str], out: str, backend: str | None = None, weights: str | None = None,
          device: str | None = None, queries: int = 8, neighbours: int = 10) -> None:
    """Figs. 12-13: each sample's nearest training images by L2 distance, (a) in the backend's
    feature space, (b) in pixel space. Inputs: a sample chunk, then the training shard folder."""
    import torch

    from fdrl.chunks import read_chunks
    from fdrl.data import one_pass
    from fdrl.distributed import pick_device
    from fdrl.features import load_extractor

    plt = _pyplot()
    if len(inputs) != 2 or backend is None:
        raise FdrlError("fig12 takes a sample chunk and the training shard folder, and --backend "
                        "(the feature space of panel a)")
    device = pick_device(device)
    images, seeds, info = read_chunks(inputs[:1])
    query = torch.from_numpy(images[np.argsort(seeds, kind="stable")][:queries]).permute(0, 3, 1, 2)
    train = torch.cat([batch for _, batch in one_pass(inputs[1], batch=256)])
    extractor = load_extractor(backend, weights, device)
    spaces = {"features": (lambda x: extractor(x).double().cpu(), extractor.name),
              "pixels": (lambda x: x.flatten(1).double(), "pixel space")}
    fig, axes = plt.subplots(1, 2, figsize=(2.2 * (neighbours + 1), 1.1 * len(query) + 0.8))
    for ax, tag, (embed, space) in zip(axes, "ab", spaces.values()):
        _, index = nearest_neighbours(query, train.split(256), embed, neighbours)
        grid = torch.cat([query[:, None], train[index]], dim=1)  # (queries, 1 + k, C, H, W)
        _grid(ax, grid.flatten(0, 1).permute(0, 2, 3, 1).numpy(), grid.shape[1],
              f"({tag}) nearest training images, {space} (left column: samples)\n"
              + _run_title(info))
    _save(fig, out)


FIGURES: dict[str, Callable[..., None]] = {
    "fig2": fig2, "fig3": fig3, "fig4": fig4, "fig5": fig5, "fig6": fig6,
    "fig6_tradeoff": fig6_tradeoff, "fig7": fig7, "fig8": fig8, "fig9": fig9, "fig10": fig10,
    "fig11": fig11, "fig12": fig12,
}
