"""Tiny random-weight LLaVA-1.5 / LLaVA-NeXT / LLaVA-OneVision models with their real HF processors.

Sizes are chosen so a model builds in well under a second on a laptop CPU while keeping the real
structure: CLIP / SigLIP vision tower with a CLS-free or CLS-dropping feature select, anyres grids
with newline tokens (a 32 px tile of 8 px patches: a 4x4 base view), a Llama text model with grouped
query attention. The tokenizer is byte-level with no merges, so any text encodes offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedModel, PreTrainedTokenizerFast, ProcessorMixin

IMAGE_TOKEN = "<image>"
VIDEO_TOKEN = "<video>"
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", IMAGE_TOKEN, VIDEO_TOKEN)
TILE = 32  # vision tower input size in pixels
PATCH = 8  # vision patch size: a tile is 4x4 patches
GRID_PINPOINTS = [[32, 64], [64, 32], [64, 64], [32, 96], [96, 32]]


@dataclass
class TinyModel:
    """A model, the processor that feeds it, and a prompt template with one ``{image}`` slot per image."""

    model: PreTrainedModel
    processor: ProcessorMixin
    image_token: str = IMAGE_TOKEN

    def prompt(self, question: str, images: int = 1) -> str:
        return "USER: " + (self.image_token + "\n") * images + question + " ASSISTANT:"


def build_tokenizer(
    extra_special_tokens: tuple[str, ...] = (), named_special_tokens: dict[str, str] | None = None
) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer with no merges (one token per UTF-8 byte) plus special tokens.

    Ids 0..5 are ``<pad> <s> </s> <unk> <image> <video>``, then any `extra_special_tokens`, then the
    values of `named_special_tokens`, then the 256 bytes. `named_special_tokens` become attributes, as
    some processors expect (``{"boi_token": "<start_of_image>"}`` gives ``tokenizer.boi_token`` and
    ``tokenizer.boi_token_id``). Deterministic and offline; decodes back to the input text.
    """
    named = dict(named_special_tokens or {})
    specials = list(SPECIAL_TOKENS)
    for token in (*extra_special_tokens, *named.values()):
        if token not in specials:
            specials.append(token)
    byte_symbols = list(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(specials)}
    for symbol in sorted(byte_symbols):
        vocab.setdefault(symbol, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
        **({"extra_special_tokens": named} if named else {}),
    )
    tokenizer.add_special_tokens({"additional_special_tokens": specials[4:]})
    return tokenizer


def _text_config(vocab_size: int, hidden: int, layers: int) -> dict[str, Any]:
    return {
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }


def _vision_config(kind: str | None, hidden: int, image_size: int = TILE, patch_size: int = PATCH) -> dict[str, Any]:
    """A 2-layer vision tower; `kind` is its model_type, or None to leave it to the family's config class."""
    return {
        **({"model_type": kind} if kind is not None else {}),
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": image_size,
        "patch_size": patch_size,
    }


def _finish(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, dtype: torch.dtype) -> PreTrainedModel:
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model.to(dtype).eval()


def tiny_llava_next(
    *,
    seed: int = 0,
    hidden: int = 64,
    layers: int = 2,
    dtype: torch.dtype = torch.float32,
    tile: int = TILE,
    patch: int = PATCH,
) -> TinyModel:
    """LLaVA-NeXT (anyres): base view of (tile/patch)^2 tokens, grids up to 2x2 / 1x3 tiles, newline tokens.

    The defaults give a 4x4 base view; ``tile=336, patch=14`` gives the released model's token layout
    (576-token base view, up to 2880 tokens per image) with tiny widths.
    """
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    tokenizer = build_tokenizer()
    pinpoints = [[tile * a // TILE, tile * b // TILE] for a, b in GRID_PINPOINTS]
    config = LlavaNextConfig(
        vision_config=_vision_config("clip_vision_model", 32, tile, patch),
        text_config=_text_config(len(tokenizer), hidden, layers),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    model = LlavaNextForConditionalGeneration(config)
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": tile},
        crop_size={"height": tile, "width": tile},
        image_grid_pinpoints=pinpoints,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    return TinyModel(_finish(model, tokenizer, dtype), processor)


def tiny_llava(*, seed: int = 0, hidden: int = 64, layers: int = 2, dtype: torch.dtype = torch.float32) -> TinyModel:
    """LLaVA-1.5: one 4x4 = 16-token view per image (the real model has 24x24 = 576)."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tokenizer = build_tokenizer()
    config = LlavaConfig(
        vision_config=_vision_config("clip_vision_model", 32),
        text_config=_text_config(len(tokenizer), hidden, layers),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": TILE}, crop_size={"height": TILE, "width": TILE})
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    return TinyModel(_finish(model, tokenizer, dtype), processor)


def tiny_llava_onevision(
    *,
    seed: int = 0,
    hidden: int = 64,
    layers: int = 2,
    dtype: torch.dtype = torch.float32,
    vision_aspect_ratio: str = "anyres_max_9",
) -> TinyModel:
    """LLaVA-OneVision: SigLIP (no CLS) 16-token base view, anyres grid with newlines.

    `vision_aspect_ratio` ``anyres_max_N`` shrinks grids above about N tiles (``anyres_max_1`` makes
    the tiny grids exercise that rule).
    """
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, LlavaOnevisionProcessor
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    tokenizer = build_tokenizer()
    config = LlavaOnevisionConfig(
        vision_config=_vision_config("siglip_vision_model", 32),
        text_config=_text_config(len(tokenizer), hidden, layers),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        video_token_id=tokenizer.convert_tokens_to_ids(VIDEO_TOKEN),
        image_grid_pinpoints=GRID_PINPOINTS,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        vision_aspect_ratio=vision_aspect_ratio,
    )
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config)
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": TILE, "width": TILE}, image_grid_pinpoints=GRID_PINPOINTS
    )
    processor = _image_only_onevision_processor(LlavaOnevisionProcessor)(
        image_processor=image_processor,
        tokenizer=tokenizer,
        num_image_tokens=(TILE // PATCH) ** 2,
        vision_feature_select_strategy="full",
        vision_aspect_ratio=vision_aspect_ratio,
    )
    return TinyModel(_finish(model, tokenizer, dtype), processor)


class TinyPixtralProcessor:
    """Mistral 3's processing without `PixtralProcessor` (which needs torchvision): the real Pixtral image
    processor, then each ``[IMG]`` expanded to rows of ``[IMG]`` tokens ending in ``[IMG_BREAK]``, the last
    one ``[IMG_END]``, exactly as `PixtralProcessor.replace_image_token` does."""

    image_token, image_break_token, image_end_token = "[IMG]", "[IMG_BREAK]", "[IMG_END]"

    def __init__(self, image_processor: Any, tokenizer: PreTrainedTokenizerFast, patch_size: int, merge: int) -> None:
        self.image_processor, self.tokenizer = image_processor, tokenizer
        self.step = patch_size * merge
        self.chat_template = None

    def __call__(self, images: Any = None, text: Any = None, **kwargs: Any) -> Any:
        from transformers import BatchFeature

        return_tensors = kwargs.pop("return_tensors", "pt")
        text = [text] if isinstance(text, str) else list(text)
        data: dict[str, Any] = {}
        if images:
            flat = [img for group in images for img in (group if isinstance(group, list | tuple) else [group])]
            step = {"height": self.step, "width": self.step}
            data = dict(self.image_processor(flat, patch_size=step, return_tensors=return_tensors))
            sizes = iter(data["image_sizes"].tolist())
            expanded = []
            for prompt in text:
                parts = prompt.split(self.image_token)
                out = parts[0]
                for part in parts[1:]:
                    height, width = next(sizes)
                    row = self.image_token * (width // self.step) + self.image_break_token
                    block = row * (height // self.step)
                    out += block[: -len(self.image_break_token)] + self.image_end_token + part
                expanded.append(out)
            text = expanded
        data.update(self.tokenizer(text, return_tensors=return_tensors, **kwargs))
        return BatchFeature(data, tensor_type=return_tensors)

    def decode(self, *args: Any, **kwargs: Any) -> str:
        return self.tokenizer.decode(*args, **kwargs)

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)


def tiny_mistral3(
    *, seed: int = 0, hidden: int = 64, layers: int = 2, dtype: torch.dtype = torch.float32, longest_edge: int = 64
) -> TinyModel:
    """Mistral 3: a Pixtral tower at the image's aspect ratio (8 px patches, 2x2 merge: 16 px per token),
    images resized to at most `longest_edge` pixels; a Mistral text model."""
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration
    from transformers.models.pixtral.image_processing_pil_pixtral import PixtralImageProcessorPil

    marks = (TinyPixtralProcessor.image_token, TinyPixtralProcessor.image_break_token, "[IMG_END]")
    tokenizer = build_tokenizer(extra_special_tokens=marks)
    text = {**_text_config(len(tokenizer), hidden, layers), "model_type": "mistral", "sliding_window": None}
    config = Mistral3Config(
        vision_config={**_vision_config("pixtral", 32, image_size=256), "head_dim": 16},
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(marks[0]),
        spatial_merge_size=2,
        vision_feature_layer=-1,
        multimodal_projector_bias=False,
    )
    torch.manual_seed(seed)
    model = Mistral3ForConditionalGeneration(config)
    image_processor = PixtralImageProcessorPil(size={"longest_edge": longest_edge})
    processor = TinyPixtralProcessor(image_processor, tokenizer, PATCH, 2)
    return TinyModel(_finish(model, tokenizer, dtype), processor, image_token=marks[0])


def _image_only_onevision_processor(base: type) -> type:
    """The OneVision processor without its video processor (which needs torchvision, absent here)."""

    class LlavaOnevisionImageProcessorOnly(base):
        def __init__(self, image_processor: Any = None, tokenizer: Any = None, **kwargs: Any) -> None:
            super().__init__(image_processor, tokenizer, None, **kwargs)

    return LlavaOnevisionImageProcessorOnly


_BUILDERS = {
    "llava": tiny_llava,
    "llava_next": tiny_llava_next,
    "llava_onevision": tiny_llava_onevision,
    "mistral3": tiny_mistral3,
}


def tiny_model(model_type: str, **kwargs: Any) -> TinyModel:
    """A tiny model of `model_type` (``llava``, ``llava_next``, ``llava_onevision``, ``mistral3``)."""
    try:
        return _BUILDERS[model_type](**kwargs)
    except KeyError:
        raise ValueError(f"no tiny builder for {model_type!r}; known: {sorted(_BUILDERS)}") from None
