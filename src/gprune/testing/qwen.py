"""Tiny random-weight Qwen2-VL / Qwen2.5-VL / Qwen3-VL models and an offline processor, for tests and demos.

Nothing here downloads anything: models come from configs (hidden size 64, 2 layers, a 1-2 block vision
tower) and the tokenizer is the offline byte-level BPE of `gprune.testing.llava` plus Qwen's vision
special tokens. The weights are random, so generated text is meaningless; shapes, positions and the
pruning plumbing are what the models exercise.

The processors of the three families refuse to build without torchvision on transformers 5.23: their
``__init__`` takes a ``video_processor`` and the class check of that argument needs the (torchvision-only)
video-processor registry, even for ``None``. `image_only_processor` makes an image-only subclass of the
real processor class, so placeholder expansion (``image_grid_thw.prod() // merge_size**2`` tokens per
image) and ``mm_token_type_ids`` are the library's own; `Qwen2VLImageProcessorPil` needs only PIL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from gprune.testing.llava import TinyModel, build_tokenizer

QWEN_MODEL_TYPES: tuple[str, ...] = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD = "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"
QWEN_SPECIAL_TOKENS: tuple[str, ...] = (VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)
IMAGE_PROMPT = f"{VISION_START}{IMAGE_PAD}{VISION_END}"
"""What the chat template writes for one image; the processor expands the pad token per image."""


@dataclass(frozen=True)
class _Family:
    config_class: str
    model_class: str
    processor_class: str
    patch_size: int


_FAMILIES: dict[str, _Family] = {
    "qwen2_vl": _Family("Qwen2VLConfig", "Qwen2VLForConditionalGeneration", "Qwen2VLProcessor", 14),
    "qwen2_5_vl": _Family("Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor", 14),
    "qwen3_vl": _Family("Qwen3VLConfig", "Qwen3VLForConditionalGeneration", "Qwen3VLProcessor", 16),
}


def _family(model_type: str) -> _Family:
    try:
        return _FAMILIES[model_type]
    except KeyError:
        raise ValueError(f"model_type must be one of {QWEN_MODEL_TYPES}, got {model_type!r}") from None


def _transformers_attr(name: str) -> Any:
    import transformers

    return getattr(transformers, name)


def tiny_qwen_tokenizer() -> Any:
    """The offline byte-level tokenizer of `gprune.testing.llava` with Qwen's vision special tokens added."""
    return build_tokenizer(extra_special_tokens=QWEN_SPECIAL_TOKENS)


def _vision_config(model_type: str, text_hidden: int) -> dict[str, Any]:
    patch = _family(model_type).patch_size
    if model_type == "qwen2_vl":
        return {
            "depth": 1,
            "embed_dim": 32,
            "hidden_size": text_hidden,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": patch,
        }
    # Qwen2.5-VL and Qwen3-VL: two 32-wide blocks; the merger projects to the text width
    blocks = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": text_hidden,
        "patch_size": patch,
    }
    if model_type == "qwen2_5_vl":
        # window attention on a 2x2-merged window of 4x4 patches, one full-attention block
        return {**blocks, "window_size": 4 * patch, "fullatt_block_indexes": [1]}
    # qwen3_vl: a 4x4 learned position grid (interpolated per image) and DeepStack taps after both blocks
    return {**blocks, "num_position_embeddings": 16, "deepstack_visual_indexes": [0, 1]}


def tiny_qwen_config(
    model_type: str, tokenizer: Any = None, *, hidden: int = 64, layers: int = 2, max_positions: int = 1024
) -> Any:
    """The config of a tiny Qwen-VL of `model_type` whose special token ids match `tokenizer`.

    Text model: `hidden` wide (64: head_dim 16), `layers` layers, 4 heads (2 KV heads), MLP 2 x hidden,
    mRoPE sections over half a head split 1/4 : 3/8 : 3/8 as Qwen's 16/24/24 of 64 (Qwen3-VL at 64:
    interleaved 4/2/2). Vision tower: `_vision_config`.
    """
    family = _family(model_type)
    tokenizer = tokenizer if tokenizer is not None else tiny_qwen_tokenizer()
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in QWEN_SPECIAL_TOKENS}
    half = hidden // 8  # half of a head (4 heads)
    sections = [4, 2, 2] if model_type == "qwen3_vl" else [half // 4, 3 * half // 8, 3 * half // 8]
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": sections}
    if model_type == "qwen3_vl":
        rope["mrope_interleaved"] = True
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": hidden // 4,
        "rope_parameters": rope,
        "max_position_embeddings": max_positions,
        "bos_token_id": None,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if model_type != "qwen3_vl":
        del text["head_dim"]  # hidden / heads already
    config = _transformers_attr(family.config_class)(
        text_config=text,
        vision_config=_vision_config(model_type, hidden),
        image_token_id=ids[IMAGE_PAD],
        video_token_id=ids[VIDEO_PAD],
        vision_start_token_id=ids[VISION_START],
        vision_end_token_id=ids[VISION_END],
    )
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    return config


def tiny_qwen_vl(model_type: str, tokenizer: Any = None, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> Any:
    """A random-weight Qwen-VL model of `model_type` whose special token ids match `tokenizer` (eval mode).

    Text model: hidden 64, 2 layers, 4 heads (2 KV heads), head_dim 16 with mRoPE sections summing to 8
    (`tiny_qwen_config`).
    """
    family = _family(model_type)
    tokenizer = tokenizer if tokenizer is not None else tiny_qwen_tokenizer()
    config = tiny_qwen_config(model_type, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _transformers_attr(family.model_class)(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.to(dtype).eval()


def image_only_processor(processor_class: type, image_processor: Any, tokenizer: Any, **kwargs: Any) -> Any:
    """An instance of `processor_class` (a Qwen-VL processor) without its video processor.

    The subclass's ``__init__`` drops the ``video_processor`` argument, which is how `ProcessorMixin`
    decides the processor's attributes, so the torchvision-only video registry is never consulted.
    """

    def __init__(
        self: Any, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None, **init_kwargs: Any
    ) -> None:
        processor_class.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **init_kwargs)

    cls = type(f"ImageOnly{processor_class.__name__}", (processor_class,), {"__init__": __init__})
    processor = cls(image_processor=image_processor, tokenizer=tokenizer, **kwargs)
    # A reloaded tokenizer may carry image_token = None; the processor then finds no placeholders at all.
    for name, default in (("image_token", IMAGE_PAD), ("video_token", VIDEO_PAD)):
        if getattr(processor, name, None) is None:
            setattr(processor, name, default)
            setattr(processor, f"{name}_id", tokenizer.convert_tokens_to_ids(default))
    return processor


def processor_from_pretrained(path: str, **kwargs: Any) -> Any:
    """A working processor for a saved Qwen-VL checkpoint (local path or hub id) without torchvision.

    ``AutoProcessor`` cannot build these processors without torchvision (on 5.23 it quietly returns the
    bare tokenizer for an image-only one); this loads the PIL image processor and the tokenizer from
    `path` and joins them with `image_only_processor`. `kwargs` go to the image processor.
    """
    from transformers import AutoConfig, AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    model_type = AutoConfig.from_pretrained(path).model_type
    family = _family(model_type)
    tokenizer = AutoTokenizer.from_pretrained(path)
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(path, **kwargs)
    chat_template = getattr(tokenizer, "chat_template", None)
    return image_only_processor(
        _transformers_attr(family.processor_class), image_processor, tokenizer, chat_template=chat_template
    )


def tiny_qwen_processor(
    model_type: str, tokenizer: Any = None, *, min_pixels: int | None = None, max_pixels: int | None = None
) -> Any:
    """The family's own processor class, image-only, with a PIL image processor and small pixel limits.

    Images are resized to multiples of ``patch_size * 2`` between `min_pixels` (default 2x2 merged tokens)
    and `max_pixels` (default 8x8 patches, i.e. at most 16 visual tokens per image).
    """
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    family = _family(model_type)
    tokenizer = tokenizer if tokenizer is not None else tiny_qwen_tokenizer()
    patch = family.patch_size
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=patch,
        merge_size=2,
        temporal_patch_size=2,
        min_pixels=min_pixels if min_pixels is not None else (2 * patch) ** 2,
        max_pixels=max_pixels if max_pixels is not None else (8 * patch) ** 2,
    )
    return image_only_processor(_transformers_attr(family.processor_class), image_processor, tokenizer)


def tiny_qwen(
    model_type: str, *, seed: int = 0, dtype: torch.dtype = torch.float32, **processor_kwargs: Any
) -> TinyModel:
    """A tiny `model_type` model (``qwen2_vl``, ``qwen2_5_vl``, ``qwen3_vl``) with its offline processor.

    ``TinyModel.prompt`` writes Qwen's image slot (vision start, image pad, vision end) once per image.
    """
    tokenizer = tiny_qwen_tokenizer()
    model = tiny_qwen_vl(model_type, tokenizer, seed=seed, dtype=dtype)
    return TinyModel(model, tiny_qwen_processor(model_type, tokenizer, **processor_kwargs), image_token=IMAGE_PROMPT)


def video_inputs(
    model: Any, image_processor: Any, frames: Any, *, fps: float = 2.0
) -> tuple[str, dict[str, torch.Tensor]]:
    """A video as the family's video processor would hand it over: prompt text and tensors, from frame arrays.

    `frames` is (T, H, W, 3) uint8 with T even and H, W multiples of ``2 * patch_size`` (no resizing here;
    the video processors need torchvision). Frames are rescaled and normalised with `image_processor`'s
    mean and std, cut into 2-frame temporal patches and flattened patch by patch in the processor's order
    (merge window, channel, time, patch row, patch column). The text is Qwen2/2.5-VL's single slot of
    ``t * h * w / 4`` video pads, or Qwen3-VL's per frame ``<{s:.1f} seconds>`` slot of ``h * w / 4``
    pads. Returns (text, {pixel_values_videos, video_grid_thw[, second_per_grid_ts]}).
    """
    import numpy as np

    model_type = model.config.model_type
    patch = int(model.config.vision_config.patch_size)
    merge, temporal = 2, 2
    array = np.asarray(frames, dtype=np.float32) / 255.0
    count, height, width, channels = array.shape
    if count % temporal or height % (patch * merge) or width % (patch * merge):
        raise ValueError(f"frames {array.shape}: need an even count and sides that are multiples of {patch * merge}")
    mean = np.asarray(image_processor.image_mean, dtype=np.float32)
    std = np.asarray(image_processor.image_std, dtype=np.float32)
    array = ((array - mean) / std).transpose(0, 3, 1, 2)  # (T, C, H, W)
    grid_t, grid_h, grid_w = count // temporal, height // patch, width // patch
    patches = array.reshape(grid_t, temporal, channels, grid_h // merge, merge, patch, grid_w // merge, merge, patch)
    patches = patches.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)  # (t, gh, gw, mh, mw, C, T, ph, pw)
    flat = patches.reshape(grid_t * grid_h * grid_w, channels * temporal * patch * patch)
    per_frame = grid_h * grid_w // merge**2
    if model_type == "qwen3_vl":
        times = [(temporal * k + (temporal - 1) / 2) / fps for k in range(grid_t)]
        text = "".join(f"<{s:.1f} seconds>{VISION_START}{VIDEO_PAD * per_frame}{VISION_END}" for s in times)
    else:
        text = f"{VISION_START}{VIDEO_PAD * (grid_t * per_frame)}{VISION_END}"
    tensors = {
        "pixel_values_videos": torch.from_numpy(np.ascontiguousarray(flat)),
        "video_grid_thw": torch.tensor([[grid_t, grid_h, grid_w]]),
    }
    if model_type == "qwen2_5_vl":
        tensors["second_per_grid_ts"] = torch.tensor([temporal / fps])
    return text, tensors
