"""Gemma 3 (`gemma3`): a fixed number of pooled SigLIP tokens per image (256 on the released models).

Facts this adapter rests on (transformers 5.23):

- ``get_image_features(pixel_values)`` returns ``pooler_output`` as one (num_images, mm_tokens_per_image, D)
  tensor (avg-pooled 4x4 to 16x16 = 256 tokens, projected); the model scatters it, flattened, into the
  ``image_token_id`` placeholders between ``<start_of_image>`` and ``<end_of_image>``.
- ``token_type_ids`` (1 on image tokens) make each contiguous run of image tokens attend to itself
  bidirectionally; cutting them with the same keep mask (the pipeline does, they are per-token) keeps
  every image's kept tokens one bidirectional block.
- The language model uses 1-D RoPE, so the pipeline's default positions apply. Sliding-window layers
  count the window in tokens of the (pruned) sequence.

Every image is one graph. With pan-and-scan the processor turns one image into several crops, each
its own image here with its own ``mm_tokens_per_image`` tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from gprune.adapters import register_adapter
from gprune.adapters.base import EncodedImages, ImageTokens, ModelAdapter
from gprune.layouts import TokenLayout, single_group_layout


@register_adapter
class Gemma3Adapter(ModelAdapter):
    """Gemma 3: ``mm_tokens_per_image`` tokens per image (or crop), scored as one graph."""

    model_types = ("gemma3",)
    image_input_keys = ("pixel_values",)

    @classmethod
    def image_layout(cls, model_config: Any, image_size: tuple[int, int], **kwargs: Any) -> TokenLayout:
        """Every image (every pan-and-scan crop) is resized to one view: the size does not matter."""
        return single_group_layout(int(model_config.mm_tokens_per_image))

    def encode_images(self, inputs: Mapping[str, Any]) -> EncodedImages:
        features = self.model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
        return EncodedImages([ImageTokens(f, single_group_layout(f.shape[0])) for f in features])

    def model_kwargs(self, encoded: EncodedImages, kept: Sequence[Tensor]) -> dict[str, Any]:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        # Gemma 3 takes one (num_images, tokens, D) tensor; every image has the same layout, so the
        # same keep setting leaves every image the same number of tokens.
        features = [img.features[k.to(img.features.device)] for img, k in zip(encoded.images, kept, strict=True)]
        if len({f.shape[0] for f in features}) > 1:
            raise ValueError(f"Gemma 3 images kept different token counts {[f.shape[0] for f in features]}")
        return {"mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=torch.stack(features))}}
