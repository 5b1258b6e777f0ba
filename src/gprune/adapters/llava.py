"""Adapters for LLaVA-1.5 (`llava`), LLaVA-NeXT (`llava_next`), LLaVA-OneVision (`llava_onevision`)
and the LLaVA-derived Mistral 3 (`mistral3`).

All three scatter projected vision features into ``<image>`` placeholders of a 1-D RoPE language
model, so the pipeline's default positions apply. They differ in how one image is packed:

- LLaVA-1.5: one view (24x24 = 576 tokens on the released model), one graph.
- LLaVA-NeXT: base view, then the unpadded high-res grid row by row, each row ending in the learned
  ``image_newline``. Base and grid are separate graphs and newlines are always kept, as the released
  G-Prune code does (`gprune.layouts.llava_next_layout`).
- LLaVA-OneVision: the same packing with a SigLIP base view (27x27 = 729) and the ``anyres_max_9`` rule
  that shrinks large grids; in a multi-image prompt each image is a single tile plus one newline.
  A video is its frames, each one view pooled 2x2 (bilinear, ``ceil(side / 2)^2`` = 14x14 = 196 tokens on
  the released model), frame after frame, then one ``image_newline`` for the whole video: frames are
  grouped into graphs by ``video_window`` (`gprune.video`) and the newline is always kept.

- Mistral 3: a Pixtral tower at the image's own aspect ratio, 2x2 patch merge; the row breaks and the
  end marker are text tokens (``[IMG_BREAK]`` / ``[IMG_END]``), so an image's ``[IMG]`` tokens are one graph.

The grid shape is computed from the config and image size with transformers' own helpers, so the
kept count is known before any features exist; `encode_images` checks it against the real features.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from gprune.adapters import register_adapter
from gprune.adapters.base import EncodedImages, ImageTokens, ModelAdapter
from gprune.layouts import TokenLayout, llava_next_layout, single_group_layout
from gprune.video import video_layout

_VISION_OPTIONS = ("vision_feature_layer", "vision_feature_select_strategy")


def _image_size(image_size: Any) -> tuple[int, int]:
    if isinstance(image_size, Tensor):
        image_size = image_size.tolist()
    height, width = (int(v) for v in image_size)
    if height < 1 or width < 1:
        raise ValueError(f"image size must be (height, width) >= 1 pixel, got {(height, width)}")
    return height, width


def _base_side(model_config: Any) -> int:
    vision = model_config.vision_config
    return int(vision.image_size) // int(vision.patch_size)


def _encoder_options(inputs: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    return {k: inputs[k] for k in names if inputs.get(k) is not None}


class LlavaStyleAdapter(ModelAdapter):
    """Shared by the family: kept features go back as pre-encoded image outputs (``mm_encoder_outputs``)."""

    def model_kwargs(self, encoded: EncodedImages, kept: Sequence[Tensor]) -> dict[str, Any]:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        features = [img.features[k.to(img.features.device)] for img, k in zip(encoded.images, kept, strict=True)]
        return {"mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=features)}}


def _checked(features: Sequence[Tensor], layouts: Sequence[TokenLayout], family: str) -> EncodedImages:
    if len(features) != len(layouts):
        raise ValueError(f"{family}: {len(features)} encoded images but {len(layouts)} image sizes")
    images = []
    for k, (f, layout) in enumerate(zip(features, layouts, strict=True)):
        if f.shape[0] != layout.length:
            raise ValueError(
                f"{family}: image {k} encodes to {f.shape[0]} tokens but its layout predicts {layout.length}; "
                "the model config and the packing rule disagree"
            )
        images.append(ImageTokens(f, layout))
    return EncodedImages(images)


@register_adapter
class LlavaAdapter(LlavaStyleAdapter):
    """LLaVA-1.5: every image is one view of (image_size / patch_size)^2 tokens, scored as one graph."""

    model_types = ("llava",)
    image_input_keys = ("pixel_values", "image_sizes", *_VISION_OPTIONS)

    @classmethod
    def image_layout(cls, model_config: Any, image_size: tuple[int, int], **kwargs: Any) -> TokenLayout:
        _image_size(image_size)  # the processor resizes every image to one view; the size only has to be valid
        side = _base_side(model_config)
        extra = 1 if getattr(model_config, "vision_feature_select_strategy", "default") == "full" else 0
        return single_group_layout(side * side + extra)

    def encode_images(self, inputs: Mapping[str, Any]) -> EncodedImages:
        out = self.model.get_image_features(
            pixel_values=inputs["pixel_values"], **_encoder_options(inputs, ("image_sizes", *_VISION_OPTIONS))
        )
        features = list(out.pooler_output)
        return EncodedImages([ImageTokens(f, single_group_layout(f.shape[0])) for f in features])


def _anyres_grid(model_config: Any, image_size: tuple[int, int], max_patches: int | None) -> tuple[int, int]:
    """Rows and columns of the unpadded high-res grid, by transformers' own shape rules."""
    from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape, unpad_image

    side = _base_side(model_config)
    tiles_h, tiles_w = get_anyres_image_grid_shape(
        list(image_size), model_config.image_grid_pinpoints, model_config.vision_config.image_size
    )
    rows, cols = unpad_image(torch.empty(0, tiles_h * side, tiles_w * side), list(image_size)).shape[1:]
    if max_patches is not None:  # OneVision's anyres_max_N: bilinear shrink of grids above ~N tiles
        ratio = math.sqrt(rows * cols / (max_patches * side**2))
        if ratio > 1.1:
            rows, cols = int(rows // ratio), int(cols // ratio)
    return int(rows), int(cols)


@register_adapter
class LlavaNextAdapter(LlavaStyleAdapter):
    """LLaVA-NeXT: base view and high-res grid scored separately, newline tokens always kept."""

    model_types = ("llava_next",)
    image_input_keys = ("pixel_values", "image_sizes", *_VISION_OPTIONS)

    @classmethod
    def image_layout(cls, model_config: Any, image_size: tuple[int, int], **kwargs: Any) -> TokenLayout:
        size = _image_size(image_size)
        side = _base_side(model_config)
        return llava_next_layout(side * side, *_anyres_grid(model_config, size, None))

    def encode_images(self, inputs: Mapping[str, Any]) -> EncodedImages:
        image_sizes = inputs.get("image_sizes")
        if image_sizes is None:
            raise ValueError("LLaVA-NeXT needs image_sizes next to pixel_values (the processor returns both)")
        out = self.model.get_image_features(
            pixel_values=inputs["pixel_values"], image_sizes=image_sizes, **_encoder_options(inputs, _VISION_OPTIONS)
        )
        layouts = [self.image_layout(self.config, _image_size(s)) for s in image_sizes]
        return _checked(list(out.pooler_output), layouts, "llava_next")


def onevision_video_frame_tokens(model_config: Any) -> int:
    """Tokens one LLaVA-OneVision video frame enters the LLM as: its view pooled 2x2, ``ceil(side / 2)^2``.

    As ``LlavaOnevisionModel.apply_pooling`` (bilinear to ``ceil(h / 2) x ceil(w / 2)``) and the processor's
    ``replace_video_token`` count them; a video of F frames fills ``F * this + 1`` ``<video>`` placeholders
    (the 1: the newline closing the video).
    """
    return math.ceil(_base_side(model_config) / 2) ** 2


@register_adapter
class LlavaOnevisionAdapter(LlavaStyleAdapter):
    """LLaVA-OneVision: images with LLaVA-NeXT grouping and ``anyres_max_N`` grids; videos by frame or window.

    A video (``pixel_values_videos``: videos x frames x C x H x W) enters the LLM as
    ``get_video_features``: each frame through the vision tower and projector, pooled 2x2 to
    `onevision_video_frame_tokens`, all frames in order, then one learned ``image_newline`` per video;
    the processor writes exactly that many ``<video>`` placeholders. Each video is pruned as F frames of
    those tokens grouped by ``video_window`` (one graph per frame by default; `gprune.video.video_layout`)
    with the newline always kept (``always_kept_tail=1``), under ``video_keep``. Images and videos of one
    call are pruned together and go back through ``mm_encoder_outputs``; video-only calls are pruned too.
    Positions are the 1-D ones of the unpruned prompt, gathered or compacted as for images.
    """

    model_types = ("llava_onevision",)
    image_input_keys = (
        "pixel_values",
        "image_sizes",
        "batch_num_images",
        "vision_aspect_ratio",
        "pixel_values_videos",
        "image_sizes_videos",
        *_VISION_OPTIONS,
    )

    def has_images(self, inputs: Mapping[str, Any]) -> bool:
        """Whether the call carries images or videos to prune."""
        return super().has_images(inputs) or self._videos(inputs) is not None

    @staticmethod
    def _videos(inputs: Mapping[str, Any]) -> Tensor | None:
        videos = inputs.get("pixel_values_videos")
        return videos if isinstance(videos, Tensor) and videos.numel() > 0 else None

    @classmethod
    def image_layout(
        cls, model_config: Any, image_size: tuple[int, int], *, multi_image: bool = False, **kwargs: Any
    ) -> TokenLayout:
        """`multi_image`: the image shares its prompt with others, so it is packed as one tile + newline."""
        size = _image_size(image_size)
        side = _base_side(model_config)
        if multi_image:
            return llava_next_layout(side * side, 0, 0)
        aspect = kwargs.get("vision_aspect_ratio") or getattr(model_config, "vision_aspect_ratio", "anyres_max_9")
        max_patches = int(str(aspect).removeprefix("anyres_max_"))
        return llava_next_layout(side * side, *_anyres_grid(model_config, size, max_patches))

    def encode_images(self, inputs: Mapping[str, Any]) -> EncodedImages:
        """Images (in placeholder order), then videos (in ``pixel_values_videos`` order)."""
        encoded = self._encode_pictures(inputs) if super().has_images(inputs) else EncodedImages([])
        videos = self._videos(inputs)
        if videos is not None:
            encoded.images.extend(self._encode_videos(videos, inputs))
        return encoded

    def _encode_pictures(self, inputs: Mapping[str, Any]) -> EncodedImages:
        image_sizes = inputs.get("image_sizes")
        if image_sizes is None:
            raise ValueError("LLaVA-OneVision needs image_sizes next to pixel_values (the processor returns both)")
        per_prompt = inputs.get("batch_num_images")
        options = _encoder_options(inputs, ("vision_aspect_ratio", *_VISION_OPTIONS))
        out = self.model.get_image_features(
            pixel_values=inputs["pixel_values"], image_sizes=image_sizes, batch_num_images=per_prompt, **options
        )
        multi = [False] * len(image_sizes) if per_prompt is None else [int(n) > 1 for n in per_prompt for _ in range(n)]
        aspect = options.get("vision_aspect_ratio")
        layouts = [
            self.image_layout(self.config, _image_size(s), multi_image=m, vision_aspect_ratio=aspect)
            for s, m in zip(image_sizes, multi, strict=True)
        ]
        return _checked(list(out.pooler_output), layouts, "llava_onevision")

    def _encode_videos(self, videos: Tensor, inputs: Mapping[str, Any]) -> list[ImageTokens]:
        if videos.dim() != 5:
            raise ValueError(
                "LLaVA-OneVision pixel_values_videos must be (videos, frames, channels, height, width), "
                f"got shape {tuple(videos.shape)}"
            )
        frames = int(videos.shape[1])
        per_frame = onevision_video_frame_tokens(self.config)
        out = self.model.get_video_features(videos, **_encoder_options(inputs, _VISION_OPTIONS))
        items = []
        for k, f in enumerate(out.pooler_output):
            if f.shape[0] != frames * per_frame + 1:
                raise ValueError(
                    f"llava_onevision: video {k} encodes to {f.shape[0]} tokens but {frames} frames of {per_frame} "
                    f"pooled tokens plus a newline make {frames * per_frame + 1}; the model config and the "
                    "packing rule disagree"
                )
            layout = video_layout(frames, per_frame, always_kept_tail=1)
            items.append(ImageTokens(f, layout, kind="video", frames=frames, always_kept_tail=1))
        return items

    def model_kwargs(self, encoded: EncodedImages, kept: Sequence[Tensor]) -> dict[str, Any]:
        """Kept image features as a list (one tensor per image); kept video tokens as a (videos, kept, D)
        tensor, which the model flattens into the ``<video>`` placeholders in order.

        One row per video, as ``get_video_features`` returns: beam search and ``num_return_sequences``
        expand ``mm_encoder_outputs`` by splitting ``pooler_output`` where its cumulative lengths meet the
        prompts' cumulative placeholder counts, so every prompt's videos must be rows of their own. The
        videos of one call share their frame count (``pixel_values_videos`` is one tensor), hence their
        layout, hence their kept count (a pure function of layout and keep): the rows stack."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        cut: dict[str, list[Tensor]] = {"image": [], "video": []}
        for item, k in zip(encoded.images, kept, strict=True):
            cut[item.kind].append(item.features[k.to(item.features.device)])
        outputs: dict[str, Any] = {}
        if cut["image"]:
            outputs["image"] = BaseModelOutputWithPooling(pooler_output=cut["image"])
        if cut["video"]:
            outputs["video"] = BaseModelOutputWithPooling(pooler_output=torch.stack(cut["video"]))
        return {"mm_encoder_outputs": outputs}


@register_adapter
class Mistral3Adapter(LlavaStyleAdapter):
    """Mistral 3 (Mistral-Small-3.1 vision): each image's merged Pixtral patches, scored as one graph."""

    model_types = ("mistral3",)
    image_input_keys = ("pixel_values", "image_sizes", "vision_feature_layer")

    @classmethod
    def image_layout(
        cls, model_config: Any, image_size: tuple[int, int], *, longest_edge: int = 1540, **kwargs: Any
    ) -> TokenLayout:
        """`longest_edge`: the processor's ``size["longest_edge"]`` (1540 on Mistral-Small-3.1)."""
        import numpy as np
        from transformers.models.pixtral.image_processing_pil_pixtral import get_resize_output_image_size

        height, width = _image_size(image_size)
        step = int(model_config.vision_config.patch_size) * int(model_config.spatial_merge_size)
        pixels = np.broadcast_to(np.zeros((), dtype=np.uint8), (height, width, 3))  # shape only, no memory
        rows, cols = get_resize_output_image_size(
            pixels, size=(longest_edge, longest_edge), patch_size=(step, step), input_data_format="channels_last"
        )
        return single_group_layout((rows // step) * (cols // step))

    def encode_images(self, inputs: Mapping[str, Any]) -> EncodedImages:
        image_sizes = inputs.get("image_sizes")
        if image_sizes is None:
            raise ValueError("Mistral 3 needs image_sizes next to pixel_values (the processor returns both)")
        out = self.model.get_image_features(
            pixel_values=inputs["pixel_values"],
            image_sizes=image_sizes,
            **_encoder_options(inputs, ("vision_feature_layer",)),
        )
        return EncodedImages([ImageTokens(f, single_group_layout(f.shape[0])) for f in out.pooler_output])
