"""Offline configs of the checkpoints users name most, and how many visual tokens an image becomes.

The bundled JSON files (``gprune/configs/*.json``) hold each checkpoint's published ``config.json``
values (with sizes the hub file leaves to transformers defaults written out) plus the image-processor
settings that decide token counts. `image_tokens` turns an image size into the token layout the
selector uses, so FLOPs and kept counts match what pruning really does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from gprune.errors import UserError
from gprune.integrations.hf import image_layout
from gprune.layouts import TokenLayout

QWEN_VL_PREPROCESSOR = {"min_pixels": 3136, "max_pixels": 12845056}  # Qwen2-VL / 2.5-VL 7B-Instruct
SUPPORTED_MODEL_TYPES = ("llava", "llava_next", "qwen2_vl", "qwen2_5_vl")


@dataclass(frozen=True)
class Checkpoint:
    """A model config plus the preprocessing settings that decide visual token counts."""

    name: str
    config: Any
    preprocessor: dict[str, Any] = field(default_factory=dict)
    source: str = ""


@dataclass(frozen=True)
class ImageTokens:
    """One image as the model sees it.

    layout: the packed visual tokens that enter the LLM, grouped as the selector scores them.
    encoder_images: images the vision tower runs (LLaVA-NeXT: base view + one per tile).
    projector_tokens: tokens the projector maps (LLaVA: patches of every encoded image; Qwen: ViT patches).
    grid_thw: Qwen-VL patch grid (t, h, w); None for CLIP towers.
    description: how the count arises, for people.
    """

    layout: TokenLayout
    encoder_images: int
    projector_tokens: int
    grid_thw: tuple[int, int, int] | None
    description: str


def bundled_checkpoints() -> list[str]:
    """Names accepted by `load_checkpoint`."""
    folder = resources.files("gprune") / "configs"
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def _config_from_dict(data: dict[str, Any]) -> Any:
    data = dict(data)
    model_type = data.pop("model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UserError(f"model_type {model_type!r} is not supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
    from transformers import AutoConfig  # here, not at the top: `gprune --help` runs without transformers

    return AutoConfig.for_model(model_type, **data)


def load_checkpoint(name_or_path: str) -> Checkpoint:
    """A bundled checkpoint by name, or a ``config.json`` path (a sibling ``preprocessor_config.json``
    is read too when present)."""
    if name_or_path in bundled_checkpoints():
        text = (resources.files("gprune") / "configs" / f"{name_or_path}.json").read_text()
        bundle = json.loads(text)
        return Checkpoint(name_or_path, _config_from_dict(bundle["config"]), bundle["preprocessor"], bundle["source"])
    path = Path(name_or_path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise UserError(
            f"{name_or_path!r} is neither a bundled checkpoint ({', '.join(bundled_checkpoints())}) nor a config file"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON: {err}") from None
    preprocessor: dict[str, Any] = {}
    sibling = path.with_name("preprocessor_config.json")
    if sibling.is_file():
        preprocessor = json.loads(sibling.read_text())
    return Checkpoint(str(path), _config_from_dict(data), preprocessor, str(path))


def image_tokens(checkpoint: Checkpoint, height: int, width: int) -> ImageTokens:
    """How an image of `height` x `width` pixels is tokenised by `checkpoint` (one image, no video)."""
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"image {name} must be a positive int, got {value!r}")
    config = checkpoint.config
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise UserError(
            f"model_type {config.model_type!r} is not supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    if config.model_type in ("llava", "llava_next"):
        # The layout is the one the HF integration prunes with (one source of truth for token counts).
        layout = image_layout(config, (height, width))
        vision = config.vision_config
        base = int(layout.groups[0].numel())
        if config.model_type == "llava":
            return ImageTokens(layout, 1, base, None, f"{base} tokens ({vision.image_size} px view)")
        from transformers.image_processing_utils import select_best_resolution

        best_h, best_w = select_best_resolution((height, width), config.image_grid_pinpoints)
        tiles_h, tiles_w = best_h // vision.image_size, best_w // vision.image_size
        rows = int(layout.always_keep.numel()) if len(layout.groups) > 1 else 0
        cols = int(layout.groups[1].numel()) // rows if rows else 0
        text = (
            f"base {base} + grid {rows}x{cols} + {rows} newlines "
            f"(best resolution {best_h}x{best_w}: {tiles_h}x{tiles_w} tiles of {vision.image_size})"
        )
        tiles = tiles_h * tiles_w
        return ImageTokens(layout, 1 + tiles, (1 + tiles) * base, None, text)
    vision = config.vision_config
    pre = {**QWEN_VL_PREPROCESSOR, **checkpoint.preprocessor}
    size = pre.get("size") or {}  # newer preprocessor files: size = {shortest_edge, longest_edge} in pixels
    pixels = {
        "min_pixels": int(size.get("shortest_edge", pre["min_pixels"])),
        "max_pixels": int(size.get("longest_edge", pre["max_pixels"])),
    }
    layout = image_layout(config, (height, width), **pixels)
    factor = vision.patch_size * vision.spatial_merge_size
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    h, w = smart_resize(height, width, factor=factor, **pixels)
    grid = (1, h // vision.patch_size, w // vision.patch_size)
    text = f"resized to {h}x{w}: {grid[1]}x{grid[2]} patches, {vision.spatial_merge_size}x merge"
    return ImageTokens(layout, 1, grid[1] * grid[2], grid, text)
