"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL (transformers 5.23): one graph per image, videos by frame or window,
mRoPE positions, DeepStack.

Facts this adapter rests on (checked in the installed transformers source):

- ``model.model.get_image_features(pixel_values, image_grid_thw)`` returns ``pooler_output`` as a tuple
  with one (t*h*w / merge**2, D) tensor per image, after the 2x2 patch merger (and, on Qwen2.5-VL,
  already back in raster order after window attention). The image's placeholder run in ``input_ids``
  has exactly that many ``image_token_id`` tokens, in the same order.
- ``get_rope_index(input_ids, mm_token_type_ids, image_grid_thw, video_grid_thw, attention_mask)``
  gives the (3, B, L) temporal/height/width positions: text runs count up by one in all three rows; an
  image starting at s gets t = s, h = s + row, w = s + col; the text after it starts at
  s + max(h, w) / merge. Padding keeps position 0.
- ``generate`` builds (4, B, L) positions: row 0 is the text position (``cumsum(mask) - 1``) that only
  shapes the attention mask (a gapped row 0 with no 2-D mask reads as packed sequences), rows 1-3 are
  mRoPE. User-supplied ``position_ids`` are used as given and each decoding step appends last + 1 in
  every row; ``rope_deltas`` (cached on ``model.model``) are only consulted when no positions are given.
- Precomputed features go in through ``mm_encoder_outputs={"image": <encoder output>}`` (no
  ``pixel_values``). Qwen3-VL's output also carries ``deepstack_features``: one tuple per tapped vision
  layer with one tensor per image, added to the hidden states of the first LLM layers at the image
  placeholders -- they are cut with the same kept indices as ``pooler_output``.

- Videos: ``get_video_features(pixel_values_videos, video_grid_thw)`` returns one (t*h*w / merge**2, D)
  tensor per video, frame (temporal patch) after frame; they fill the ``video_token_id`` placeholders and
  go back in through ``mm_encoder_outputs={"video": ...}``, cut like images (DeepStack included). The
  temporal mRoPE row of a video comes from ``get_rope_index`` (scaled by ``second_per_grid_ts`` on
  Qwen2.5-VL); Qwen3-VL writes a timestamp in text before each frame and numbers each frame as its own
  grid: both are the model's own positions on the unpruned ids, gathered or compacted like an image's.

Positions. "original" keeps each kept token's unpruned (t, h, w) position. "compact" closes the
position *values* that no kept token uses any more (e.g. the last rows of an image whose tokens were all
pruned): every value is replaced by its rank among the values still in use, in all three rows alike.
Text stays consecutive, an image's rows and columns keep their order and the position after the prompt
equals the number of distinct values used. A 1-D renumbering (as for LLaMA-style RoPE) is deliberately
not offered: it would erase the (h, w) grid the model was trained on. Row 0 is always the contiguous
text position of the pruned sequence, and ``rope_deltas`` are set so that decoding from the model's
own bookkeeping continues right after the last kept position.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from gprune.adapters import register_adapter
from gprune.adapters.base import EncodedImages, ImageTokens, ModelAdapter
from gprune.integrations.hf_args import cache_keyword
from gprune.layouts import TokenLayout, single_group_layout
from gprune.video import video_layout

if TYPE_CHECKING:  # pragma: no cover
    from gprune.pipeline import PrunedSequences

# What Qwen2VLImageProcessor uses when the checkpoint's preprocessor config says nothing.
DEFAULT_MIN_PIXELS = 56 * 56
DEFAULT_MAX_PIXELS = 28 * 28 * 1280


def _cut_per_image(per_image: Sequence[Tensor], kept: Sequence[Tensor]) -> tuple[Tensor, ...]:
    return tuple(f[k.to(f.device)] for f, k in zip(per_image, kept, strict=True))


def text_positions(attention_mask: Tensor) -> Tensor:
    """Row 0 of Qwen's (4, B, L) positions, as ``generate`` builds it: attended tokens counted from 0."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)


def compact_mrope(positions: Tensor, keep_mask: Tensor) -> Tensor:
    """Replace each position value by its rank among the values the kept tokens use (per sample).

    `positions` (3, B, L) are the unpruned mRoPE rows, `keep_mask` (B, L) the kept tokens. Values are
    ranked from the sample's smallest kept value, so the map is the identity when no value is unused.
    """
    out = positions.clone()
    for b in range(positions.shape[1]):
        kept = positions[:, b][:, keep_mask[b].to(positions.device)]
        if kept.numel() == 0:
            continue
        used = torch.unique(kept)  # sorted
        out[:, b] = used[0] + torch.searchsorted(used, positions[:, b].contiguous()).clamp_max(used.numel() - 1)
    return out


@register_adapter
class QwenVLAdapter(ModelAdapter):
    """Qwen2-VL / Qwen2.5-VL / Qwen3-VL: each image is one graph over its merged tokens; videos are grouped
    by frame or window of frames (`gprune.video`)."""

    model_types: ClassVar[tuple[str, ...]] = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
    image_input_keys: ClassVar[tuple[str, ...]] = ("pixel_values", "image_grid_thw", "pixel_values_videos")
    per_token_keys: ClassVar[tuple[str, ...]] = ("mm_token_type_ids", "token_type_ids")

    @property
    def _inner(self) -> Any:
        """The ``Qwen*VLModel`` holding the vision tower, ``get_rope_index`` and ``rope_deltas``."""
        return self.model.model

    def has_images(self, inputs: Mapping[str, Any]) -> bool:
        """Whether the call carries images or videos to prune."""
        return any(
            isinstance(inputs.get(key), Tensor) and inputs[key].numel() > 0
            for key in ("pixel_values", "pixel_values_videos")
        )

    def encode_images(self, inputs: Mapping[str, Any]) -> EncodedImages:
        """Images (one graph each), then videos: each a run of t frames (temporal patches) of h*w/merge^2 tokens.

        A video's tokens are frame after frame, in raster order within a frame (as the model scatters
        them); on Qwen3-VL its frames are separated by timestamp text in ``input_ids``, which the pipeline
        leaves alone: the video is located among the video placeholders wherever they are.
        """
        items: list[ImageTokens] = []
        image_output, image_grid = self._encode(inputs, "image")
        if image_output is not None:
            items += [ImageTokens(f, single_group_layout(int(f.shape[0]))) for f in image_output.pooler_output]
        video_output, video_grid = self._encode(inputs, "video")
        if video_output is not None:
            for f, thw in zip(video_output.pooler_output, video_grid, strict=True):
                frames = int(thw[0])
                layout = video_layout(frames, int(f.shape[0]) // frames)
                items.append(ImageTokens(f, layout, kind="video", frames=frames))
        return EncodedImages(items, extra={"image_output": image_output, "video_output": video_output})

    def _encode(self, inputs: Mapping[str, Any], kind: str) -> tuple[Any, list[list[int]]]:
        """The vision tower's output for the call's images or videos and their (t, h, w) grid; (None, []) if none."""
        pixels_key = "pixel_values" if kind == "image" else "pixel_values_videos"
        pixels = inputs.get(pixels_key)
        if not isinstance(pixels, Tensor) or pixels.numel() == 0:
            return None, []
        grid = inputs.get(f"{kind}_grid_thw")
        if grid is None:
            raise ValueError(f"Qwen-VL {pixels_key} need {kind}_grid_thw (one (t, h, w) row per {kind}); it is missing")
        encode = self._inner.get_image_features if kind == "image" else self._inner.get_video_features
        return encode(pixels, grid, return_dict=True), grid.tolist()

    def model_kwargs(self, encoded: EncodedImages, kept: Sequence[Tensor]) -> dict[str, Any]:
        outputs = {}
        for kind in ("image", "video"):
            source = encoded.extra[f"{kind}_output"]
            if source is None:
                continue
            mine = [k for item, k in zip(encoded.images, kept, strict=True) if item.kind == kind]
            fields: dict[str, Any] = {"pooler_output": _cut_per_image(source.pooler_output, mine)}
            deepstack = getattr(source, "deepstack_features", None)
            if deepstack is not None:  # Qwen3-VL: the same kept tokens in every tapped layer
                fields["deepstack_features"] = [_cut_per_image(layer, mine) for layer in deepstack]
            outputs[kind] = type(source)(**fields)
        return {"mm_encoder_outputs": outputs}

    @classmethod
    def image_layout(cls, model_config: Any, image_size: tuple[int, int], **kwargs: Any) -> TokenLayout:
        """Layout of one image of ``(height, width)`` pixels, as the processor would resize it.

        Pass the processor's ``image_processor=`` (exact), or ``min_pixels=`` / ``max_pixels=`` (defaults:
        transformers' Qwen2-VL defaults, 56*56 and 28*28*1280; checkpoints often set others).
        """
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        height, width = (int(v) for v in image_size)
        if height < 1 or width < 1:
            raise ValueError(f"image_size must be (height, width) >= 1, got {image_size}")
        vision = model_config.vision_config
        merge = int(vision.spatial_merge_size)
        processor = kwargs.get("image_processor")
        if processor is not None:
            patches = int(processor.get_number_of_image_patches(height, width, {}))
            return single_group_layout(patches // merge**2)
        patch = int(vision.patch_size)
        h, w = smart_resize(
            height,
            width,
            factor=patch * merge,
            min_pixels=int(kwargs.get("min_pixels", DEFAULT_MIN_PIXELS)),
            max_pixels=int(kwargs.get("max_pixels", DEFAULT_MAX_PIXELS)),
        )
        return single_group_layout((h // patch) * (w // patch) // merge**2)

    def position_ids(
        self, input_ids: Tensor, attention_mask: Tensor, inputs: Mapping[str, Any], *, for_generate: bool
    ) -> Tensor:
        """(4, B, L): the text row, then the model's own mRoPE rows for the unpruned sequence.

        A plain forward of the unpruned model uses the same three mRoPE rows (and no text row, which only
        matters for the attention mask: the pipeline always passes a 2-D one), so `for_generate` changes
        nothing here.
        """
        if inputs.get("inputs_embeds") is not None:
            return self._embeddings_positions(attention_mask, inputs, for_generate=for_generate)
        token_types = inputs.get("mm_token_type_ids")
        if token_types is None:
            raise ValueError(
                "Qwen-VL needs mm_token_type_ids (returned by the processor with input_ids) to place images in "
                "its 3-D positions; pass all of the processor's outputs"
            )
        grid_keys = ("image_grid_thw", "video_grid_thw", "second_per_grid_ts")
        rope_kwargs = {k: inputs[k] for k in grid_keys if inputs.get(k) is not None}
        mrope, _ = self._inner.get_rope_index(
            input_ids, mm_token_type_ids=token_types, attention_mask=attention_mask, **rope_kwargs
        )
        return torch.cat([text_positions(attention_mask).unsqueeze(0).to(mrope.device), mrope], dim=0)

    def _embeddings_positions(self, attention_mask: Tensor, inputs: Mapping[str, Any], *, for_generate: bool) -> Tensor:
        """What the model uses for a call made with ``inputs_embeds``: it has no ids to place images by.

        ``generate`` then numbers the attended tokens in all rows; ``forward`` asks the model's own
        ``compute_3d_position_ids``, which falls back on cached ``rope_deltas`` or on ``arange``.
        """
        flat = text_positions(attention_mask)
        if not for_generate:
            options = {k: inputs.get(k) for k in ("image_grid_thw", "video_grid_thw", "mm_token_type_ids")}
            options |= {"attention_mask": inputs.get("attention_mask"), "inputs_embeds": inputs["inputs_embeds"]}
            compute = self._inner.compute_3d_position_ids
            options[cache_keyword(compute)] = None
            known = {k: v for k, v in options.items() if k in inspect.signature(compute).parameters}
            mrope = compute(input_ids=None, **known)
            if mrope is not None:
                return torch.cat([flat.unsqueeze(0).to(mrope.device), mrope], dim=0)
            flat = torch.arange(flat.shape[1], device=flat.device).expand_as(flat)
        return flat.unsqueeze(0).expand(4, *flat.shape)

    def compact_positions(self, positions: Tensor, keep_mask: Tensor) -> Tensor:
        """Close the mRoPE position values no kept token uses (see the module docstring); row 0 is redone later."""
        if positions.dim() == 2:  # a user's 1-D positions: the model broadcasts them to every row
            positions = positions.unsqueeze(0).expand(3, *positions.shape)
        if positions.dim() != 3 or positions.shape[0] not in (3, 4):
            raise ValueError(f"Qwen-VL positions must be (3 or 4, batch, length), got {tuple(positions.shape)}")
        head = positions.shape[0] - 3
        return torch.cat([positions[:head], compact_mrope(positions[head:], keep_mask)], dim=0)

    def finalize(self, model_kwargs: dict[str, Any], pruned: PrunedSequences) -> dict[str, Any]:
        """Rebuild row 0 for the pruned sequence and set ``rope_deltas`` to continue after the last kept position."""
        positions = model_kwargs["position_ids"]
        mask = model_kwargs["attention_mask"]
        if positions.dim() == 2:  # a user's 1-D positions: the model broadcasts them to every row
            positions = positions.unsqueeze(0).expand(3, *positions.shape)
        if positions.dim() != 3 or positions.shape[0] not in (3, 4):
            raise ValueError(f"Qwen-VL position_ids must be (3 or 4, batch, length), got {tuple(positions.shape)}")
        mrope = positions[positions.shape[0] - 3 :]
        valid = mask.bool().to(mrope.device)
        last = mrope.masked_fill(~valid.unsqueeze(0), -1).amax(dim=(0, 2))  # (B,)
        self._inner.rope_deltas = (last + 1 - valid.sum(-1)).unsqueeze(1)
        text = text_positions(mask).unsqueeze(0).to(mrope.device)
        return {**model_kwargs, "position_ids": torch.cat([text, mrope], dim=0)}
