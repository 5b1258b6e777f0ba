"""Tiny random-weight Idefics3 and SmolVLM models with the real Idefics3 processor, offline.

Both families share the packing: an image larger than one tile is resized so its sides are multiples
of the tile, cut into rows x cols tiles, and followed by a downscaled global view; each view is
pixel-shuffled to ``(tile / patch)^2 / scale^2`` tokens. Here a tile is 64 px of 8 px patches with a
2x pixel shuffle (16 tokens per view) and images are resized to a longest edge of 128 px, so an image
is 2x2, 1x2, 2x1 tiles + global, or a single global view. SmolVLM's own processor needs ``num2words``
and a torchvision video processor; its image prompt is the same as Idefics3's, so the tiny SmolVLM uses
`Idefics3Processor` with the SmolVLM image processor.
"""

from __future__ import annotations

from typing import Any

import torch

from gprune.testing.llava import TinyModel, _finish, _text_config, _vision_config, build_tokenizer

TILE = 64
PATCH = 8
SCALE = 2
LONGEST_EDGE = 2 * TILE
MARKERS = (
    "<fake_token_around_image>",
    "<global-img>",
    "<end_of_utterance>",
    *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)),
)


class TinyIdefics3(TinyModel):
    """Prompts mark each image with ``<image>``; the processor expands it to tiles and the global view."""

    def prompt(self, question: str, images: int = 1) -> str:
        return "User:" + "<image>" * images + question + "<end_of_utterance>\nAssistant:"


def _tiny(model_type: str, *, seed: int, hidden: int, layers: int, dtype: torch.dtype, **processor: Any) -> TinyModel:
    from transformers import Idefics3Processor

    if model_type == "idefics3":
        from transformers import Idefics3Config as Config
        from transformers import Idefics3ForConditionalGeneration as Model
        from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil as Images
    else:
        from transformers import SmolVLMConfig as Config
        from transformers import SmolVLMForConditionalGeneration as Model
        from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil as Images

    tokenizer = build_tokenizer(extra_special_tokens=MARKERS)
    config = Config(
        vision_config=_vision_config(None, 32, TILE, PATCH),
        text_config=_text_config(len(tokenizer), hidden, layers),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=SCALE,
    )
    torch.manual_seed(seed)
    model = Model(config)
    image_processor = Images(
        size={"longest_edge": processor.pop("longest_edge", LONGEST_EDGE)},
        max_image_size={"longest_edge": TILE},
        **processor,
    )
    seq_len = (TILE // PATCH) ** 2 // SCALE**2
    proc = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=seq_len)
    return TinyIdefics3(_finish(model, tokenizer, dtype), proc)


def tiny_idefics3(
    *, seed: int = 0, hidden: int = 64, layers: int = 2, dtype: torch.dtype = torch.float32, **processor: Any
) -> TinyModel:
    """Idefics3 (SigLIP tiles + global view, pixel shuffle, Llama); `processor` overrides image processor
    settings (``longest_edge``, ``do_image_splitting``)."""
    return _tiny("idefics3", seed=seed, hidden=hidden, layers=layers, dtype=dtype, **processor)


def tiny_smolvlm(
    *, seed: int = 0, hidden: int = 64, layers: int = 2, dtype: torch.dtype = torch.float32, **processor: Any
) -> TinyModel:
    """SmolVLM: Idefics3's packing and model code under ``model_type`` ``smolvlm``."""
    return _tiny("smolvlm", seed=seed, hidden=hidden, layers=layers, dtype=dtype, **processor)
