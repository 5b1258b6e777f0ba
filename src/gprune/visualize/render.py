"""Token boxes to pixels, in numpy only: label rasters, kept-token overlays and per-token value maps.

Everything here works without matplotlib, so notebooks and tests get plain arrays. Rasters are drawn at a
display size (the photo scaled so its longer side is at most `max_side`); a pixel belongs to the token
whose box contains the pixel's centre.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

DEFAULT_MAX_SIDE = 768
DIM = 0.3  # brightness of pruned patches
OUTLINE = np.array([255, 215, 0], dtype=np.uint8)  # kept-token outline colour


def legend_swatches(grey: float = 0.7) -> dict[str, dict[str, tuple[float, ...]]]:
    """Colours (RGB in [0, 1]) of a mid-grey patch as the overlay draws it kept and pruned, for a legend.

    Taken from `DIM` and `OUTLINE`, so the legend cannot drift from what `kept_overlay` draws.
    """
    outline = tuple(float(c) / 255.0 for c in OUTLINE)
    return {
        "kept": {"face": (grey, grey, grey), "edge": outline},
        "pruned": {"face": (grey * DIM, grey * DIM, grey * DIM), "edge": (grey * DIM, grey * DIM, grey * DIM)},
    }


def display_size(image_size: tuple[int, int], max_side: int = DEFAULT_MAX_SIDE) -> tuple[int, int]:
    """(height, width) of the photo scaled down so its longer side is at most `max_side` (never up)."""
    if max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    h, w = image_size
    scale = min(1.0, max_side / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def resize_photo(photo: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The (H, W, 3) uint8 photo resized to `size` (height, width)."""
    if photo.shape[:2] == tuple(size):
        return photo
    return np.asarray(Image.fromarray(photo).resize((size[1], size[0]), Image.Resampling.BICUBIC))


def token_labels(
    boxes: np.ndarray, tokens: np.ndarray, image_size: tuple[int, int], out_size: tuple[int, int]
) -> np.ndarray:
    """(h, w) int64 raster: at each pixel the index of the token in `tokens` covering it, else -1.

    `boxes` (L, 4) are in photo pixels of `image_size`; tokens with NaN boxes cover nothing. Later
    tokens win where boxes overlap (they do not within one LLaVA group).
    """
    (h, w), (oh, ow) = image_size, out_size
    sx, sy = ow / w, oh / h
    labels = np.full((oh, ow), -1, dtype=np.int64)
    for t in tokens:
        x0, y0, x1, y1 = boxes[t]
        if not math.isfinite(x0):
            continue
        c0, c1 = math.ceil(x0 * sx - 0.5), math.ceil(x1 * sx - 0.5)
        r0, r1 = math.ceil(y0 * sy - 0.5), math.ceil(y1 * sy - 0.5)
        labels[max(r0, 0) : max(r1, 0), max(c0, 0) : max(c1, 0)] = t
    return labels


def kept_overlay(photo: np.ndarray, labels: np.ndarray, kept: np.ndarray, *, dim: float = DIM) -> np.ndarray:
    """The photo with pixels of pruned (or uncovered) tokens dimmed and kept tokens outlined.

    `photo` (h, w, 3) uint8 matches `labels` (h, w); `kept` (L,) bool indexes the labels.
    """
    if photo.shape[:2] != labels.shape:
        raise ValueError(f"photo {photo.shape[:2]} and label raster {labels.shape} differ in size")
    covered = labels >= 0
    kept_px = covered & kept[np.where(covered, labels, 0)]
    out = photo.astype(np.float32)
    out[~kept_px] *= dim
    edge = np.zeros_like(kept_px)
    padded = np.pad(labels, 1, constant_values=-1)
    centre = padded[1:-1, 1:-1]
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        edge |= padded[1 + dy : padded.shape[0] - 1 + dy, 1 + dx : padded.shape[1] - 1 + dx] != centre
    out[kept_px & edge] = OUTLINE
    return out.round().astype(np.uint8)


def value_map(labels: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(h, w) float64 raster of per-token `values` (indexed like the labels); NaN where no token is."""
    covered = labels >= 0
    out = np.full(labels.shape, np.nan)
    out[covered] = values[labels[covered]]
    return out
