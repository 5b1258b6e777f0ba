"""Idefics3 (`idefics3`) and SmolVLM (`smolvlm`): tiles plus a global view per image, pixel-shuffled.

Facts this adapter rests on (transformers 5.23):

- The processor resizes an image to a longest edge (``size["longest_edge"]``, 4 tiles on the released
  models), rounds its sides up to multiples of the tile (``max_image_size``, the vision tower's
  ``image_size``), cuts rows x cols tiles and appends the image resized to one tile (the global view).
  An image of at most one tile is the global view alone. Every view becomes
  ``(image_size / patch_size)^2 / scale_factor^2`` ``<image>`` tokens (169 on Idefics3-8B, 64 on
  SmolVLM-256M), each view's run preceded by a marker text token: ``<row_r_col_c>`` for a tile,
  ``<global-img>`` for the global view, with ``<fake_token_around_image>`` and newlines around them.
- The processor drops the per-image rows / cols; ``pixel_values`` is (batch, views, 3, H, W) with
  all-zero padding views, and ``get_image_features`` returns ``pooler_output`` as one (views x tokens, D)
  tensor per batch row. So the views are assigned to images by reading the markers in ``input_ids``:
  every image ends with its global view, so the marker before the last view of a row is the global
  marker, and each view it precedes closes an image. This needs no tokenizer ids and holds for any
  tokenizer in which ``<global-img>`` and ``<row_r_col_c>`` are single tokens (the released ones).
- The model takes pre-encoded features as ``mm_encoder_outputs={"image": BaseModelOutputWithPooling(
  pooler_output=[...])}`` in ``forward`` and ``generate`` and concatenates a list; one tensor per image
  keeps beam-search expansion (which splits the list at batch-row boundaries) exact.
- The language model (Llama / SmolLM2) uses 1-D RoPE: the pipeline's default positions apply.

Grouping (as the released G-Prune code does on LLaVA-NeXT): per image, the tiles together are one
graph and the global view another, with the same keep setting; the markers are text and always stay.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from gprune.adapters import register_adapter
from gprune.adapters.base import EncodedImages, ImageTokens, ModelAdapter
from gprune.errors import image_token_mismatch
from gprune.layouts import TokenLayout, tiled_layout


def tokens_per_view(model_config: Any) -> int:
    """``<image>`` tokens of one tile or global view after the pixel shuffle."""
    vision = model_config.vision_config
    side = int(vision.image_size) // int(vision.patch_size)
    return side * side // int(model_config.scale_factor) ** 2


def view_runs(input_ids: Tensor, image_token_id: int, view_tokens: int) -> list[list[int]]:
    """Per batch row, the token id just before each run of image placeholders (the view's marker).

    Every run must be exactly one view long; anything else means the ids were not made by the processor.
    """
    markers: list[list[int]] = []
    for r, row in enumerate(input_ids.tolist()):
        runs: list[int] = []
        i, n = 0, len(row)
        while i < n:
            if row[i] != image_token_id:
                i += 1
                continue
            j = i
            while j < n and row[j] == image_token_id:
                j += 1
            if j - i != view_tokens:
                raise ValueError(
                    f"row {r} holds a run of {j - i} image tokens at column {i}; every Idefics3 / SmolVLM view is "
                    f"{view_tokens} tokens. Pass the processor's input_ids together with its pixel values"
                )
            runs.append(row[i - 1] if i > 0 else -1)
            i = j
        markers.append(runs)
    return markers


def tiles_per_image(markers: Sequence[Sequence[int]]) -> list[list[int]]:
    """Per batch row, the tile count of each image: views up to and including each global-marked view."""
    last = {row[-1] for row in markers if row}
    if len(last) > 1:
        raise ValueError(
            f"the image views of different rows end with different marker tokens {sorted(last)}; expected every "
            "image to end with its <global-img> view"
        )
    images: list[list[int]] = []
    for row in markers:
        counts, tiles = [], 0
        for marker in row:
            if marker in last:
                counts.append(tiles)
                tiles = 0
            else:
                tiles += 1
        images.append(counts)
    return images


@register_adapter
class Idefics3Adapter(ModelAdapter):
    """Idefics3 / SmolVLM: per image, tiles as one graph and the global view as another."""

    model_types = ("idefics3", "smolvlm")
    image_input_keys = ("pixel_values", "pixel_attention_mask")

    @classmethod
    def image_layout(
        cls,
        model_config: Any,
        image_size: tuple[int, int],
        *,
        longest_edge: int | None = None,
        do_image_splitting: bool = True,
        **kwargs: Any,
    ) -> TokenLayout:
        """Tiles as the image processor cuts them. `longest_edge`: the processor's ``size["longest_edge"]``
        (default 4 tiles, as on Idefics3-8B, SmolVLM-256M / -2B); `do_image_splitting` as the processor's."""
        from transformers.models.idefics3.image_processing_pil_idefics3 import (
            MAX_IMAGE_SIZE,
            _resize_output_size_rescale_to_max_len,
            _resize_output_size_scale_below_upper_bound,
        )

        height, width = (int(v) for v in (image_size.tolist() if isinstance(image_size, Tensor) else image_size))
        if height < 1 or width < 1:
            raise ValueError(f"image size must be (height, width) >= 1 pixel, got {(height, width)}")
        view = tokens_per_view(model_config)
        if not do_image_splitting:
            return tiled_layout(view, 0)
        tile = int(model_config.vision_config.image_size)
        longest = 4 * tile if longest_edge is None else int(longest_edge)
        height, width = _resize_output_size_rescale_to_max_len(height, width, max_len=longest)
        height, width = _resize_output_size_scale_below_upper_bound(height, width, max_len=MAX_IMAGE_SIZE)
        aspect = width / height  # then sides rounded up to whole tiles, as `resize_for_vision_encoder` does
        if width >= height:
            width = math.ceil(width / tile) * tile
            height = math.ceil(int(width / aspect) / tile) * tile
        else:
            height = math.ceil(height / tile) * tile
            width = math.ceil(int(height * aspect) / tile) * tile
        if height <= tile and width <= tile:
            return tiled_layout(view, 0)
        return tiled_layout(view, (height // tile) * (width // tile))

    def encode_images(self, inputs: Mapping[str, Any]) -> EncodedImages:
        input_ids = inputs.get("input_ids")
        if not isinstance(input_ids, Tensor):
            raise ValueError("Idefics3 / SmolVLM pruning needs input_ids: the image markers in them group the views")
        view = tokens_per_view(self.config)
        tiles = tiles_per_image(view_runs(input_ids, self.image_token_id, view))
        out = self.model.get_image_features(
            pixel_values=inputs["pixel_values"], pixel_attention_mask=inputs.get("pixel_attention_mask")
        )
        # The model fills the placeholders with the views in order, whichever row of pixel_values holds
        # them (a packed row's images may sit in one row): assign views to images the same way.
        features = torch.cat([f.reshape(-1, f.shape[-1]) for f in out.pooler_output])
        counts = [n for row in tiles for n in row]
        lengths = [(n + 1) * view for n in counts]
        if features.shape[0] != sum(lengths):
            raise image_token_mismatch(sum(lengths), features.shape[0], "the pixel values do not fill the image tokens")
        return EncodedImages(
            [ImageTokens(f, tiled_layout(view, n)) for f, n in zip(torch.split(features, lengths), counts, strict=True)]
        )

    def model_kwargs(self, encoded: EncodedImages, kept: Sequence[Tensor]) -> dict[str, Any]:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        features = [img.features[k.to(img.features.device)] for img, k in zip(encoded.images, kept, strict=True)]
        return {"mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=features)}}
