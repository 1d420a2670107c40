"""The paper's figures as PNG files, drawn from the files the experiments wrote."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from fdrl.errors import FdrlError
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
    import matplotlib.pyplot as plt

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
        row = ((x + 1) * 127.5).round().byte().permute(2, 0, 3, 1).flatten(1, 2).numpy()
        ax.imshow(row[..., 0] if row.shape[-1] == 1 else row, cmap="gray", vmin=0, vmax=255)
        ax.set_axis_off()
        ax.set_title(f"{Path(path).parent.name}: prior samples", fontsize=9)
    _save(fig, out)


FIGURES: dict[str, Callable[[list[str], str], None]] = {
    "fig2": fig2, "fig3": fig3, "fig10": fig10, "fig11": fig11,
}
