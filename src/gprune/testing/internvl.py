"""A tiny random-weight InternVL with its real processor (images only), offline.

InternVL tiles an image into the grid of 64 px tiles whose aspect ratio is closest to the image's
(1 to `max_patches` tiles), adds a thumbnail when there is more than one tile, and turns each view
into ``image_seq_length`` tokens (here 8x8 patches of 8 px, pixel-shuffled 2x: 16 tokens; 256 on the
released models) between ``<img>`` and ``</img>``. The processor's video processor needs torchvision,
so this one is built without it.
"""

from __future__ import annotations

from typing import Any

import torch

from gprune.testing.llava import TinyModel, _finish, _text_config, _vision_config, build_tokenizer

TILE = 64
PATCH = 8
VIEW_TOKENS = (TILE // PATCH) ** 2 // 4
MAX_PATCHES = 4
MARKS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}


class TinyInternVL(TinyModel):
    """Prompts mark each image with ``<IMG_CONTEXT>``; the processor expands it to ``<img>...</img>``."""

    def prompt(self, question: str, images: int = 1) -> str:
        return "<|user|>\n" + (MARKS["context_image_token"] + "\n") * images + question + "\n<|assistant|>\n"


def _image_only_processor(base: type) -> type:
    class InternVLImageProcessorOnly(base):
        def __init__(self, image_processor: Any = None, tokenizer: Any = None, **kwargs: Any) -> None:
            super().__init__(image_processor, tokenizer, None, **kwargs)

    return InternVLImageProcessorOnly


def tiny_internvl(
    *,
    seed: int = 0,
    hidden: int = 64,
    layers: int = 2,
    dtype: torch.dtype = torch.float32,
    max_patches: int = MAX_PATCHES,
) -> TinyModel:
    """InternVL (InternViT with a CLS token, 2x pixel shuffle, MLP projector, Qwen2 text model)."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLProcessor
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    tokenizer = build_tokenizer(named_special_tokens=MARKS)
    config = InternVLConfig(
        vision_config=_vision_config(None, 32, TILE, PATCH),
        text_config={**_text_config(len(tokenizer), hidden, layers), "model_type": "qwen2"},
        image_token_id=tokenizer.convert_tokens_to_ids(MARKS["context_image_token"]),
        image_seq_length=VIEW_TOKENS,
        downsample_ratio=0.5,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(config)
    image_processor = GotOcr2ImageProcessorPil(
        size={"height": TILE, "width": TILE}, crop_to_patches=True, min_patches=1, max_patches=max_patches
    )
    processor = _image_only_processor(InternVLProcessor)(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_length=VIEW_TOKENS
    )
    return TinyInternVL(_finish(model, tokenizer, dtype), processor)
