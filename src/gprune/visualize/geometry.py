"""Exact patch-to-pixel geometry: which pixels of the original photo each packed visual token came from.

Two packings, reproduced from transformers 5.23 (the installed source is the reference):

- plain ViT grid (LLaVA-1.5, ``CLIPImageProcessor``): resize the shortest edge to the crop size (the long
  edge becomes ``int(crop * long / short)``), centre-crop (offset ``(size - crop) // 2``), cut into square
  patches; one group of ``(crop / patch)^2`` tokens.
- LLaVA-NeXT "anyres" (``LlavaNextImageProcessor`` + ``LlavaNextModel.pack_image_features``): a base view
  (the whole photo squashed to ``tile x tile``), then a high-res canvas chosen by ``select_best_resolution``
  from the grid pinpoints; the photo is resized into it keeping its aspect (``get_patch_output_size``),
  centred with zero padding (offset ``(target - new) // 2``) and cut into ``tile x tile`` crops. The model
  lays the crops' patch features out as one big grid, removes padded rows or columns of that grid
  (``unpad_image``, computed on the feature grid from the original size), and appends a newline token to
  every remaining grid row. Packed order: base view, then grid rows each ending in a newline.

Boxes are continuous pixel coordinates ``(x0, y0, x1, y1)`` in the original photo (pixel i spans
[i, i + 1)), clipped to the photo; tokens that cover no photo pixel (newlines, grid cells that lie wholly
in the padding) have NaN boxes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gprune.layouts import TokenLayout, llava_next_layout, single_group_layout

LLAVA_NEXT_PINPOINTS: tuple[tuple[int, int], ...] = ((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008))
"""LLaVA-NeXT (llava-v1.6) ``image_grid_pinpoints`` as (height, width): the transformers default."""

BASE, GRID, NEWLINE = 0, 1, 2
KIND_NAMES = ("base", "grid", "newline")


@dataclass(frozen=True)
class PatchGeometry:
    """Where each of one image's packed visual tokens came from.

    boxes: (L, 4) float64 ``(x0, y0, x1, y1)`` in original-photo pixels, NaN where a token covers no pixel.
    kind: (L,) int8, `BASE`, `GRID` or `NEWLINE`.
    source: (L, 3) int64 ``(view, row, col)``: the token is patch (row, col) of preprocessed view `view`
        (0 is the base view or the single ViT view, then the high-res tiles in row-major order); -1 for
        newlines.
    layout: the groups G-Prune scores separately (same order as `group_names`) and the always-kept tokens.
    """

    image_size: tuple[int, int]
    boxes: np.ndarray
    kind: np.ndarray
    source: np.ndarray
    layout: TokenLayout
    group_names: tuple[str, ...]
    grid_shape: tuple[int, int] | None = None  # (rows, cols) of the unpadded high-res grid, anyres only

    @property
    def num_tokens(self) -> int:
        return int(self.kind.shape[0])


def _check_image_size(image_size: Sequence[int]) -> tuple[int, int]:
    if len(image_size) != 2 or any(isinstance(v, bool) or int(v) != v or v < 1 for v in image_size):
        raise ValueError(f"image_size must be (height, width) with positive ints, got {tuple(image_size)!r}")
    return int(image_size[0]), int(image_size[1])


def _check_tiling(tile_size: int, patch_size: int) -> int:
    if patch_size < 1 or tile_size < patch_size or tile_size % patch_size:
        raise ValueError(f"tile/crop size {tile_size} must be a positive multiple of patch size {patch_size}")
    return tile_size // patch_size


def vit_geometry(image_size: Sequence[int], *, crop_size: int = 336, patch_size: int = 14) -> PatchGeometry:
    """Plain ViT grid after CLIP preprocessing: shortest edge to `crop_size`, centre crop, square patches.

    `image_size` is (height, width) of the original photo. This is LLaVA-1.5 in transformers (its original
    code pads to a square instead; transformers' processor resizes and crops).
    """
    h, w = _check_image_size(image_size)
    side = _check_tiling(crop_size, patch_size)
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = crop_size, int(crop_size * long / short)
    new_h, new_w = (new_long, new_short) if w <= h else (new_short, new_long)
    top, left = (new_h - crop_size) // 2, (new_w - crop_size) // 2
    if top < 0 or left < 0:  # cannot happen for shortest-edge resizing, kept as a guard on the rule
        raise ValueError(f"centre crop {crop_size} larger than resized image {new_h}x{new_w}")
    rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    sy, sx = h / new_h, w / new_w
    boxes = np.stack(
        [
            (left + cols * patch_size) * sx,
            (top + rows * patch_size) * sy,
            (left + (cols + 1) * patch_size) * sx,
            (top + (rows + 1) * patch_size) * sy,
        ],
        axis=-1,
    ).astype(np.float64)
    n = side * side
    source = np.stack([np.zeros(n, dtype=np.int64), rows, cols], axis=-1)
    return PatchGeometry(
        (h, w), boxes, np.full(n, BASE, dtype=np.int8), source, single_group_layout(n), ("image",), None
    )


def patch_output_size(image_size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """Size (h, w) of the photo resized to fit `target` keeping its aspect (transformers' get_patch_output_size)."""
    (h, w), (th, tw) = image_size, target
    scale_w, scale_h = tw / w, th / h
    if scale_w < scale_h:
        return min(math.ceil(h * scale_w), th), tw
    return th, min(math.ceil(w * scale_h), tw)


def unpadded_span(image_size: tuple[int, int], grid_shape: tuple[int, int]) -> tuple[slice, slice]:
    """Rows and columns of the feature grid that `unpad_image` keeps, for a photo of `image_size` (h, w)."""
    (h, w), (gh, gw) = image_size, grid_shape
    if w / h > gw / gh:
        new_h = int(round(h * (gw / w), 7))
        pad = (gh - new_h) // 2
        return slice(pad, gh - pad), slice(0, gw)
    new_w = int(round(w * (gh / h), 7))
    pad = (gw - new_w) // 2
    return slice(0, gh), slice(pad, gw - pad)


def anyres_geometry(
    image_size: Sequence[int],
    *,
    grid_pinpoints: Sequence[Sequence[int]] = LLAVA_NEXT_PINPOINTS,
    tile_size: int = 336,
    patch_size: int = 14,
) -> PatchGeometry:
    """LLaVA-NeXT packing of a photo of `image_size` (height, width): base view, unpadded grid, newlines.

    `tile_size` is the vision tower's input size (``vision_config.image_size``), which is also the base
    view's size and the crop size in the llava-v1.6 processors; `grid_pinpoints` are (height, width).
    """
    from transformers.image_processing_utils import select_best_resolution

    h, w = _check_image_size(image_size)
    side = _check_tiling(tile_size, patch_size)
    pinpoints = [[int(a), int(b)] for a, b in grid_pinpoints]
    if not pinpoints:
        raise ValueError("grid_pinpoints is empty")
    best_h, best_w = select_best_resolution((h, w), pinpoints)
    if best_h % tile_size or best_w % tile_size:
        raise ValueError(f"grid pinpoint {best_h}x{best_w} is not a multiple of the tile size {tile_size}")
    tiles_y, tiles_x = best_h // tile_size, best_w // tile_size

    # Base view: the whole photo squashed to tile x tile.
    rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    step_y, step_x = patch_size * h / tile_size, patch_size * w / tile_size
    base_boxes = np.stack([cols * step_x, rows * step_y, (cols + 1) * step_x, (rows + 1) * step_y], axis=-1)
    base_source = np.stack([np.zeros_like(rows), rows, cols], axis=-1)

    # High-res grid: cell (r, c) of the (tiles_y * side, tiles_x * side) feature grid covers canvas pixels
    # [c * patch, (c + 1) * patch) x [r * patch, (r + 1) * patch); the photo sits in the canvas at
    # (paste_x, paste_y) with size (new_h, new_w).
    new_h, new_w = patch_output_size((h, w), (best_h, best_w))
    paste_y, paste_x = (best_h - new_h) // 2, (best_w - new_w) // 2
    keep_rows, keep_cols = unpadded_span((h, w), (tiles_y * side, tiles_x * side))
    grid_r = np.arange(tiles_y * side)[keep_rows]
    grid_c = np.arange(tiles_x * side)[keep_cols]
    n_rows, n_cols = len(grid_r), len(grid_c)
    gr, gc = np.meshgrid(grid_r, grid_c, indexing="ij")

    def to_photo(canvas: np.ndarray, paste: int, new: int, orig: int) -> np.ndarray:
        return np.clip(canvas - paste, 0, new) * (orig / new)

    cell_boxes = np.stack(
        [
            to_photo(gc * patch_size, paste_x, new_w, w),
            to_photo(gr * patch_size, paste_y, new_h, h),
            to_photo((gc + 1) * patch_size, paste_x, new_w, w),
            to_photo((gr + 1) * patch_size, paste_y, new_h, h),
        ],
        axis=-1,
    )  # (n_rows, n_cols, 4)
    empty = (cell_boxes[..., 2] <= cell_boxes[..., 0]) | (cell_boxes[..., 3] <= cell_boxes[..., 1])
    cell_boxes[empty] = np.nan
    cell_source = np.stack([1 + (gr // side) * tiles_x + gc // side, gr % side, gc % side], axis=-1)

    newline_box = np.full((n_rows, 1, 4), np.nan)
    newline_source = np.full((n_rows, 1, 3), -1, dtype=np.int64)
    grid_boxes = np.concatenate([cell_boxes, newline_box], axis=1).reshape(-1, 4)
    grid_source = np.concatenate([cell_source, newline_source], axis=1).reshape(-1, 3)
    grid_kind = np.concatenate(
        [np.full((n_rows, n_cols), GRID, dtype=np.int8), np.full((n_rows, 1), NEWLINE, dtype=np.int8)], axis=1
    ).reshape(-1)

    boxes = np.concatenate([base_boxes.astype(np.float64), grid_boxes])
    source = np.concatenate([base_source, grid_source]).astype(np.int64)
    kind = np.concatenate([np.full(side * side, BASE, dtype=np.int8), grid_kind])
    layout = llava_next_layout(side * side, n_rows, n_cols)
    return PatchGeometry((h, w), boxes, kind, source, layout, ("base", "grid"), (n_rows, n_cols))


@dataclass(frozen=True)
class Packing:
    """How a model family turns a photo into visual tokens: what the geometry and preprocessing need.

    kind: "anyres" (LLaVA-NeXT) or "vit" (LLaVA-1.5: one resized, centre-cropped view).
    tile_size: the vision tower's input size (``vision_config.image_size``); patch_size: its patch size.
    grid_pinpoints: anyres canvas sizes (height, width).
    """

    kind: str = "anyres"
    tile_size: int = 336
    patch_size: int = 14
    grid_pinpoints: tuple[tuple[int, int], ...] = LLAVA_NEXT_PINPOINTS

    def __post_init__(self) -> None:
        if self.kind not in PACKING_KINDS:
            raise ValueError(f"packing kind must be one of {PACKING_KINDS}, got {self.kind!r}")
        _check_tiling(self.tile_size, self.patch_size)

    def geometry(self, image_size: Sequence[int]) -> PatchGeometry:
        """Token-to-pixel geometry for a photo of `image_size` (height, width)."""
        if self.kind == "vit":
            return vit_geometry(image_size, crop_size=self.tile_size, patch_size=self.patch_size)
        return anyres_geometry(
            image_size, grid_pinpoints=self.grid_pinpoints, tile_size=self.tile_size, patch_size=self.patch_size
        )

    @classmethod
    def from_model_config(cls, config: object) -> Packing:
        """The packing of a transformers model config (``llava_next`` or ``llava``)."""
        model_type = getattr(config, "model_type", None)
        vision = getattr(config, "vision_config", None)
        if model_type not in MODEL_TYPES or vision is None:
            raise ValueError(
                f"cannot map tokens to pixels for model_type {model_type!r}; supported: {', '.join(MODEL_TYPES)}"
            )
        tile, patch = int(vision.image_size), int(vision.patch_size)
        if model_type == "llava":
            return cls("vit", tile, patch)
        pinpoints = tuple((int(a), int(b)) for a, b in config.image_grid_pinpoints)
        return cls("anyres", tile, patch, pinpoints)


PACKING_KINDS = ("anyres", "vit")
MODEL_TYPES = ("llava_next", "llava")
PACKINGS = {"llava-next": Packing("anyres"), "llava": Packing("vit")}
"""Named packings for `--packing` when no model is given (the llava-v1.6 and llava-1.5 defaults)."""
