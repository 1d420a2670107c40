"""Images as the pipeline stores and shows them: floats in [-1, 1] to uint8, and image grids.

Only the conversion of tensors imports torch: a figure of stored uint8 images starts without it.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

import numpy as np

from fdrl.io import atomic_path

if TYPE_CHECKING:
    from torch import Tensor


def to_uint8(x: Tensor) -> np.ndarray:
    """Images in [-1, 1], (N, C, H, W), as uint8 NHWC: what sample chunks, FID and PNGs hold."""
    import torch

    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def tile(images: np.ndarray, columns: int, gap: int = 0, fill: int = 0) -> np.ndarray:
    """uint8 NHWC images as one HWC image, `columns` per row, `gap` pixels of `fill` between
    them; the cells of an unfilled last row are `fill` too."""
    n, h, w, c = images.shape
    rows = -(-n // columns)
    canvas = np.full(((h + gap) * rows - gap, (w + gap) * columns - gap, c), fill, np.uint8)
    for i, img in enumerate(images):
        r, k = divmod(i, columns)
        canvas[r * (h + gap):r * (h + gap) + h, k * (w + gap):k * (w + gap) + w] = img
    return canvas


def save_grid(images: Tensor, path: str | os.PathLike, columns: int = 8, min_size: int = 32) -> None:
    """Images in [-1, 1], (N, C, H, W), as one PNG grid, atomically; images smaller than
    `min_size` are enlarged (nearest neighbour) so that a grid of 8x8 digits stays legible."""
    from PIL import Image

    x = to_uint8(images.detach().float().cpu().clamp(-1, 1))
    scale = max(1, math.ceil(min_size / max(x.shape[1:3])))
    grid = tile(x.repeat(scale, axis=1).repeat(scale, axis=2), columns)
    with atomic_path(path) as tmp:
        Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(tmp, format="PNG")
