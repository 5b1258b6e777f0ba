"""Offline configs of the checkpoints users name most, and how many visual tokens an image becomes.

The bundled JSON files (``gprune/configs/*.json``) hold each checkpoint's published ``config.json``
values (with sizes the hub file leaves to transformers defaults written out) plus the image-processor
settings that decide token counts. `image_tokens` turns an image size into the token layout the
selector uses, and `video_tokens` does the same for a video (Qwen-VL families), so FLOPs and kept counts
match what pruning really does.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from gprune.errors import UserError
from gprune.integrations.hf import image_layout
from gprune.layouts import TokenLayout

QWEN_VL_PREPROCESSOR = {"min_pixels": 3136, "max_pixels": 12845056}  # Qwen2-VL / 2.5-VL 7B-Instruct
SUPPORTED_MODEL_TYPES = ("llava", "llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl", "qwen3_vl")
VIDEO_MODEL_TYPES = ("llava_onevision", "qwen2_vl", "qwen2_5_vl", "qwen3_vl")
# transformers' Qwen3VLVideoProcessor defaults (size in pixels over the whole video; per-frame token cap)
QWEN3_VL_VIDEO_PREPROCESSOR = {"min_pixels": 128 * 32 * 32, "max_pixels": 32 * 32 * 768, "max_video_tokens": 768}
QWEN2_VL_MAX_VIDEO_TOKENS = 128000  # Qwen2VLVideoProcessor.max_video_tokens (only read when frames are capped)


@dataclass(frozen=True)
class Checkpoint:
    """A model config plus the preprocessing settings that decide visual token counts."""

    name: str
    config: Any
    preprocessor: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    video_preprocessor: dict[str, Any] = field(default_factory=dict)
    """The video processor's settings where the checkpoint has its own (``video_preprocessor_config.json``
    or the ``video_processor`` entry of ``processor_config.json``); empty: the video processor reads
    `preprocessor`, as transformers' falls back to ``preprocessor_config.json``."""


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


@dataclass(frozen=True)
class VideoTokens(ImageTokens):
    """One video as the model sees it (`video_tokens`); the fields of `ImageTokens`, plus:

    input_frames: frames handed to the video processor (after any sampling: fps is not modelled here).
    frames: frames as the LLM sees them, the unit of `gprune.video` (Qwen-VL: temporal patches, each
        ``temporal_patch_size`` input frames merged; the last one padded by repeating the last frame).
    tokens_per_frame: visual tokens of one such frame.
    window: frames per graph (`gprune.video.video_layout`; 0 = the whole video), as `layout` groups them.
    resized: (height, width) each frame is resized to.
    always_kept_tail: tokens after the frames that every keep setting keeps (LLaVA-OneVision's newline: 1).
    """

    input_frames: int
    frames: int
    tokens_per_frame: int
    window: int
    resized: tuple[int, int]
    always_kept_tail: int = 0


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
    preprocessor = _read_json(path.with_name("preprocessor_config.json"))
    video = _read_json(path.with_name("processor_config.json")).get("video_processor") or _read_json(
        path.with_name("video_preprocessor_config.json")
    )
    return Checkpoint(str(path), _config_from_dict(data), preprocessor, str(path), video)


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or an empty dict when there is no such file."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON: {err}") from None
    return data if isinstance(data, dict) else {}


def image_tokens(checkpoint: Checkpoint, height: int, width: int) -> ImageTokens:
    """How an image of `height` x `width` pixels is tokenised by `checkpoint` (one image; videos: `video_tokens`).

    Qwen-VL checkpoints without image-processor settings get the Qwen2.5-VL-7B-Instruct pixel bounds.
    """
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"image {name} must be a positive int, got {value!r}")
    config = checkpoint.config
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise UserError(
            f"model_type {config.model_type!r} is not supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    if config.model_type in ("llava", "llava_next", "llava_onevision"):
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


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"video {name} must be a positive int, got {value!r}")
    return value


def _video_pixels(checkpoint: Checkpoint) -> tuple[int, int, bool, int]:
    """(min_pixels, max_pixels, cap_pixels_per_frame, max_video_tokens) of the checkpoint's video processor.

    Read as transformers 5.24's Qwen video processors read them: the checkpoint's video processor file,
    else ``preprocessor_config.json``; Qwen2/2.5-VL let ``min_pixels`` / ``max_pixels`` override ``size``
    (shortest_edge / longest_edge), Qwen3-VL reads ``size`` only. With no settings at all: Qwen2/2.5-VL
    take the 7B-Instruct values (as `image_tokens` does), Qwen3-VL its video processor's defaults.
    ``cap_pixels_per_frame`` (qwen-vl-utils' per-frame cap) is off unless the file switches it on, as in
    transformers 5.24.
    """
    qwen3 = checkpoint.config.model_type == "qwen3_vl"
    pre = checkpoint.video_preprocessor or checkpoint.preprocessor
    defaults = QWEN3_VL_VIDEO_PREPROCESSOR if qwen3 else QWEN_VL_PREPROCESSOR
    size = pre.get("size") or {}
    low = size.get("shortest_edge", defaults["min_pixels"])
    high = size.get("longest_edge", defaults["max_pixels"])
    if not qwen3:
        low = pre.get("min_pixels") or low
        high = pre.get("max_pixels") or high
    cap = bool(pre.get("cap_pixels_per_frame") or False)
    max_tokens = int(pre.get("max_video_tokens") or (768 if qwen3 else QWEN2_VL_MAX_VIDEO_TOKENS))
    return int(low), int(high), cap, max_tokens


def _smart_resize_video(
    frames: int, height: int, width: int, *, temporal: int, factor: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """Qwen3-VL's video resize (transformers' ``video_processing_qwen3_vl.smart_resize``): sides rounded to
    `factor`, the pixel budget over all frames together rather than per frame."""
    if frames < temporal:
        raise UserError(f"Qwen3-VL needs at least {temporal} frames per video (temporal patch size), got {frames}")
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    if max(height, width) / min(height, width) > 200:
        raise UserError(
            f"absolute aspect ratio must be smaller than 200, got {max(height, width) / min(height, width)}"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    t_bar = round(frames / temporal) * temporal
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt(frames * height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (frames * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def video_tokens(checkpoint: Checkpoint, frames: int, height: int, width: int, *, window: int = 1) -> VideoTokens:
    """How a video of `frames` frames of `height` x `width` pixels is tokenised by `checkpoint`.

    `frames` counts the frames that reach the video processor (after any fps sampling). Qwen2-VL /
    Qwen2.5-VL / Qwen3-VL: each frame is resized as the family's video processor does, the frame count is
    padded to a multiple of ``temporal_patch_size`` (by repeating the last frame) and every
    ``temporal_patch_size`` frames become one temporal patch: the video's grid is ``(t, h, w)`` patches and
    the LLM sees ``t`` frames of ``(h / merge) * (w / merge)`` tokens. `window` groups them into graphs as
    pruning does (`gprune.video.video_layout`: frames per graph, 0 = the whole video), so the layout's kept
    counts are those of `gprune.video.kept_video_tokens`. LLaVA-OneVision: every frame is one base view
    (resized to the tower's square input) whose features are pooled 2x2, then one ``image_newline`` closes
    the video and is always kept (``always_kept_tail=1``). Other model types raise a `UserError`.
    """
    from gprune.video import check_window, video_layout

    frames, height, width = _positive("frames", frames), _positive("height", height), _positive("width", width)
    try:
        window = check_window(window)
    except ValueError as err:
        raise UserError(str(err)) from None
    config = checkpoint.config
    model_type = getattr(config, "model_type", None)
    if model_type not in VIDEO_MODEL_TYPES:
        raise UserError(
            f"video token counts are defined for {', '.join(VIDEO_MODEL_TYPES)}; got model_type {model_type!r}"
        )
    vision = config.vision_config
    if model_type == "llava_onevision":
        from gprune.adapters.llava import onevision_video_frame_tokens

        side = int(vision.image_size) // int(vision.patch_size)
        per_frame = onevision_video_frame_tokens(config)
        layout = video_layout(frames, per_frame, window, always_kept_tail=1)
        text = (
            f"{frames} frames resized to {vision.image_size}x{vision.image_size}: {side}x{side} patches pooled 2x2 = "
            f"{frames} x {per_frame} tokens + 1 newline (always kept), {len(layout.groups)} graph(s) (window {window})"
        )
        size = (int(vision.image_size), int(vision.image_size))
        return VideoTokens(layout, frames, frames * side * side, None, text, frames, frames, per_frame, window, size, 1)
    patch, merge = int(vision.patch_size), int(vision.spatial_merge_size)
    temporal = int(vision.temporal_patch_size)
    factor = patch * merge
    low, high, cap, max_tokens = _video_pixels(checkpoint)
    if model_type == "qwen3_vl":
        if cap:  # Qwen3VLVideoProcessor.resize: a per-frame share of the budget, at most max_video_tokens
            per_frame = max(min(max_tokens * factor * factor, high // frames), int(low * 1.05))
            high = per_frame * frames
        h, w = _smart_resize_video(
            frames, height, width, temporal=temporal, factor=factor, min_pixels=low, max_pixels=high
        )
    else:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize  # = the video one

        if cap:  # Qwen2VLVideoProcessor.resize
            budget = int(max_tokens * factor * factor * 0.9)
            high = max(min(high, budget * temporal // frames), int(low * 1.05))
        try:
            h, w = smart_resize(height, width, factor=factor, min_pixels=low, max_pixels=high)
        except ValueError as err:
            raise UserError(str(err)) from None
    grid = (-(-frames // temporal), h // patch, w // patch)
    per_frame = grid[1] * grid[2] // merge**2
    layout = video_layout(grid[0], per_frame, window)
    graphs = "one graph" if len(layout.groups) == 1 else f"{len(layout.groups)} graphs"
    text = (
        f"resized to {h}x{w}, grid {grid[0]}x{grid[1]}x{grid[2]}: {grid[0]} frames ({temporal} input frames each) "
        f"x {per_frame} tokens ({merge}x{merge} merge), {graphs} (window {window})"
    )
    return VideoTokens(layout, 1, grid[0] * grid[1] * grid[2], grid, text, frames, grid[0], per_frame, window, (h, w))
