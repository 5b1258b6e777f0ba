"""InternVL (`internvl`, InternVL2.5 / InternVL3 ``-hf`` checkpoints): dynamic tiles plus a thumbnail.

Facts this adapter rests on (transformers 5.23):

- The image processor (GotOCR2's, ``crop_to_patches=True`` in `InternVLProcessor`) picks the tile grid
  (``min_patches`` to ``max_patches`` tiles, 1 to 12 on the released processors) whose aspect ratio is
  closest to the image's, cuts the resized image into those tiles and, when there is more than one,
  appends a thumbnail of the whole image. Each view becomes ``image_seq_length`` tokens (256; a 448 px
  InternViT view pixel-shuffled 2x). An image's views are **one contiguous run** of ``<IMG_CONTEXT>``
  tokens between ``<img>`` and ``</img>`` (text tokens, never pruned); the processor drops the per-image
  view counts, so each run's length gives them (run / ``image_seq_length``).
- ``get_image_features(pixel_values)`` returns ``pooler_output`` as one (views, tokens, D) tensor, the
  views of every image in prompt order. The model takes pre-encoded features as
  ``mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=...)}`` in ``forward`` and
  ``generate``; it needs a tensor (it calls ``.to``) and scatters its elements in order.
- Beam search / ``num_return_sequences`` expand that tensor per batch row by matching cumulative
  ``len(pooler_output[i])`` to cumulative placeholder counts per row. One flat (tokens, D) tensor breaks
  this (each "entry" would be a feature row of length D), and a (images, kept, D) tensor needs equal
  kept counts. The kept features are therefore handed back as a (tokens, 1, D) tensor: every prefix is
  a candidate boundary, so the expansion splits exactly at the batch rows whatever each image keeps.
- The language model (Qwen2 / Llama) uses 1-D RoPE: the pipeline's default positions apply.
- Videos: InternVL's processor turns video frames into the same ``<img>`` blocks and merges their
  pixels into ``pixel_values``, so each frame is pruned as a single-view image (one graph per frame).

Grouping (as the released G-Prune code does on LLaVA-NeXT): per image, the tiles together are one
graph and the thumbnail another, with the same keep setting; a single-view image is one graph.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from gprune.adapters import register_adapter
from gprune.adapters.base import EncodedImages, ImageTokens, ModelAdapter
from gprune.errors import image_token_mismatch
from gprune.layouts import TokenLayout, tiled_layout

_VISION_OPTIONS = ("vision_feature_layer", "vision_feature_select_strategy")


def image_runs(input_ids: Tensor, image_token_id: int) -> list[int]:
    """Lengths of the runs of image placeholders, row by row, left to right (one run per image)."""
    is_image = torch.nn.functional.pad(input_ids == image_token_id, (1, 1))
    edges = is_image[:, 1:].int() - is_image[:, :-1].int()  # +1 where a run starts, -1 after it ends
    starts = (edges == 1).nonzero()
    ends = (edges == -1).nonzero()
    return (ends[:, 1] - starts[:, 1]).tolist()


@register_adapter
class InternVLAdapter(ModelAdapter):
    """InternVL: per image, the tiles as one graph and the thumbnail as another."""

    model_types = ("internvl",)
    image_input_keys = ("pixel_values", *_VISION_OPTIONS)

    @classmethod
    def image_layout(
        cls,
        model_config: Any,
        image_size: tuple[int, int],
        *,
        min_patches: int = 1,
        max_patches: int = 12,
        crop_to_patches: bool = True,
        **kwargs: Any,
    ) -> TokenLayout:
        """Views as the image processor cuts them; the keywords are its settings (defaults: InternVL3-hf's)."""
        from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

        height, width = (int(v) for v in (image_size.tolist() if isinstance(image_size, Tensor) else image_size))
        if height < 1 or width < 1:
            raise ValueError(f"image size must be (height, width) >= 1 pixel, got {(height, width)}")
        tile_h, tile_w = (int(v) for v in model_config.vision_config.image_size)
        tiles = 1
        if crop_to_patches and max_patches > 1:
            cols, rows = get_optimal_tiled_canvas((height, width), (tile_h, tile_w), min_patches, max_patches)
            tiles = cols * rows
        return tiled_layout(int(model_config.image_seq_length), tiles if tiles > 1 else 0)

    def encode_images(self, inputs: Mapping[str, Any]) -> EncodedImages:
        input_ids = inputs.get("input_ids")
        if not isinstance(input_ids, Tensor):
            raise ValueError(
                "InternVL pruning needs input_ids: each image's run of <IMG_CONTEXT> tokens gives its views"
            )
        view = int(self.config.image_seq_length)
        runs = image_runs(input_ids, self.image_token_id)
        if any(n % view for n in runs):
            raise ValueError(
                f"InternVL image token runs of lengths {runs} are not whole views of {view} tokens; pass the "
                "processor's input_ids together with its pixel values"
            )
        options = {k: inputs[k] for k in _VISION_OPTIONS if inputs.get(k) is not None}
        features = self.model.get_image_features(pixel_values=inputs["pixel_values"], **options).pooler_output
        views = [n // view for n in runs]
        if features.shape[0] != sum(views):
            raise image_token_mismatch(
                sum(views) * view,
                features.shape[0] * view,
                f"pixel_values hold {features.shape[0]} views but input_ids hold {sum(views)} views of {view} tokens",
            )
        images = []
        for f, n in zip(torch.split(features, views), views, strict=True):
            images.append(ImageTokens(f.reshape(-1, f.shape[-1]), tiled_layout(view, n - 1 if n > 1 else 0)))
        return EncodedImages(images)

    def model_kwargs(self, encoded: EncodedImages, kept: Sequence[Tensor]) -> dict[str, Any]:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        features = [img.features[k.to(img.features.device)] for img, k in zip(encoded.images, kept, strict=True)]
        pooled = torch.cat(features).unsqueeze(1)  # (tokens, 1, D): see the module docstring (beam search)
        return {"mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=pooled)}}
