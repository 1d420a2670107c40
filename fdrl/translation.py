"""`fdrl translate`: unpaired image-to-image translation (Sec. 5.3, 6.5; Table 4, Fig. 7).

A run trained with the images of a source domain as its prior q' (`prior: source`; Cat2dog:
cats as q', dogs as the data) translates by flowing given source images instead of prior draws:
x_0 is source image i itself, neither flipped nor dequantized (those augment training only),
and the flow noise of image i comes from seed i alone (`PerSampleNoise`), so translated image i
depends on source image i and seed i only, whatever the batch, chunk or number of processes.
The flow runs the run's K + kappa steps (110 for Cat2dog, the paper's and the authors'
setting) and clamps to [-1, 1] (Algorithm 2). The chunk stores, with each translated image, the
index of its source image as its seed and the source image's label.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor

from fdrl import distributed
from fdrl.data import ShardStore, shard_labels
from fdrl.datasets import DATASETS
from fdrl.errors import FdrlError
from fdrl.noise import PerSampleNoise
from fdrl.sampling import Sampler, write_generated


class Translator:
    """A run trained with a source-domain prior, and the source images it translates."""

    def __init__(self, sampler: Sampler, source: str | os.PathLike):
        if sampler.run_info["prior"] != "source":
            raise FdrlError(f"run {sampler.run_info['run']} was trained with the "
                            f"{sampler.run_info['prior']} prior; translation needs a run trained "
                            "with `prior: source` (the source domain's images as q')")
        self.sampler, self.store = sampler, ShardStore(source)
        trained_on = sampler.prior.store.manifest.dataset
        given = self.store.manifest.dataset
        held_out = DATASETS[given].held_out_from if given in DATASETS else ""
        if given != trained_on and held_out != trained_on:
            raise FdrlError(f"the shards {source} hold {given}, but run {sampler.run_info['run']} "
                            f"translates {trained_on}: give its shards or a held-out split of it")
        if tuple(self.store.shape) != tuple(sampler.prior.shape):
            raise FdrlError(f"the shards {source} hold images of shape {tuple(self.store.shape)}, "
                            f"the run makes {tuple(sampler.prior.shape)}")
        self.labels = shard_labels(source)
        self.info = {**sampler.run_info, "translation": {
            "source_dataset": given, "source_shards": str(source), "source_images": len(self.store)}}

    def check(self, indices: list[int]) -> None:
        """Refuses an index that names no source image."""
        bad = [i for i in indices if not 0 <= i < len(self.store)]
        if bad:
            raise FdrlError(f"--images names image {bad[0]}, but the source shards hold "
                            f"{len(self.store)} (0-{len(self.store) - 1})")

    def sources(self, indices: list[int]) -> Tensor:
        """The source images `indices` in [-1, 1], exactly as stored (x_0 of the translation)."""
        images = np.stack([self.store.get(i) for i in indices])
        return torch.from_numpy(images).to(self.sampler.device).float() / 127.5 - 1

    def translate(self, indices: list[int]) -> Tensor:
        """The translations of the source images `indices`, in [-1, 1]."""
        return self.sampler.flow_from(self.sources(indices), PerSampleNoise(indices, self.sampler.device))

    def process(self, indices: list[int], every: int) -> list[Tensor]:
        """Each source image and every `every`-th step of its flow (Fig. 7)."""
        return self.sampler.process(indices, every, self.sources(indices))


def translate(run: str | os.PathLike, source: str | os.PathLike, out: str | os.PathLike,
              indices: list[int] | None = None, batch: int = 256, steps: int | None = None,
              device: str | None = None, precision: str | None = None,
              channels_last: bool | None = None) -> None:
    """Translates the source images `indices` (default: all) into the chunk `out`; under
    torchrun ranks split them."""
    d = distributed.init(device)
    translator = Translator(Sampler.load(run, d.device, steps, precision, channels_last), source)
    indices = list(range(len(translator.store))) if indices is None else indices
    translator.check(indices)
    write_generated(d, [(out, translator.info)], indices, lambda s: [translator.translate(s)],
                    batch, tuple(translator.store.shape), lambda seeds: translator.labels[seeds],
                    f"translate {translator.info['run']}")
