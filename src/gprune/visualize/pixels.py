"""Model-free patch features: a fixed descriptor of the pixels each visual token sees.

The photo goes through transformers' own image processor (PIL backend) for the packing, so every token's
pixels are exactly the model's input for that token. Each token's descriptor, in CLIP-normalised units,
concatenates

- texture: the patch's pixels minus the patch's mean colour (3 * p * p values);
- colour: the patch's mean colour (3 values) times ``colour_weight * p``;
- position: the patch's box centre in the photo, scaled to [-1, 1] (2 values), times ``position_weight * p``.

The factor p (the patch side) puts colour and position on the scale of the texture: with
``colour_weight = 1`` and ``position_weight = 0`` the descriptor has the same cosine geometry as the raw
pixels. The defaults (0.3, 0.5) damp flat colour, so large uniform areas do not form one giant clique,
and add a little locality, as a ViT's position embeddings do. Newline tokens have no pixels: zero
vectors (they are always kept and belong to no graph).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from gprune.visualize.geometry import NEWLINE, Packing, PatchGeometry

DEFAULT_COLOUR_WEIGHT = 0.3
DEFAULT_POSITION_WEIGHT = 0.5


def default_image_processor(packing: Packing, **normalisation: Any) -> Any:
    """The transformers image processor (PIL backend) a llava-1.5 / llava-v1.6 checkpoint ships with.

    `normalisation` (``image_mean``, ``image_std``) replaces CLIP's statistics, for encoders trained with
    others (DINOv2: ImageNet's); resizing, cropping and tiling stay the checkpoint's.
    """
    size = {"shortest_edge": packing.tile_size}
    crop = {"height": packing.tile_size, "width": packing.tile_size}
    if packing.kind == "vit":
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        return CLIPImageProcessorPil(size=size, crop_size=crop, **normalisation)
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    return LlavaNextImageProcessorPil(
        size=size, crop_size=crop, image_grid_pinpoints=[list(p) for p in packing.grid_pinpoints], **normalisation
    )


def preprocess(image: Image.Image, geometry: PatchGeometry, packing: Packing, image_processor: Any = None) -> Tensor:
    """The model's input views for `image`: (V, 3, tile, tile) fp32, view 0 first (base or single view).

    Checks that the processor produced the views the geometry expects, so a processor whose settings differ
    from the model config fails loudly instead of mapping tokens to the wrong pixels.
    """
    processor = image_processor if image_processor is not None else default_image_processor(packing)
    pixel_values = processor(images=[image], return_tensors="pt")["pixel_values"]
    views = pixel_values.reshape(-1, *pixel_values.shape[-3:]).float()
    expected_views = int(geometry.source[:, 0].max()) + 1
    tile = packing.tile_size
    if views.shape[0] < expected_views or tuple(views.shape[-2:]) != (tile, tile):
        raise ValueError(
            f"the image processor produced views of shape {tuple(views.shape)}, but the model's packing needs "
            f"{expected_views} views of {tile}x{tile}: processor and model config disagree"
        )
    return views[:expected_views]


def token_pixels(views: Tensor, geometry: PatchGeometry, patch_size: int) -> Tensor:
    """Each packed token's pixels, (L, 3, p, p); zeros for newline tokens."""
    v, c, h, w = views.shape
    p = patch_size
    patches = views.reshape(v, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)  # (V, rows, cols, 3, p, p)
    src = torch.from_numpy(geometry.source).clamp_min(0)
    out = patches[src[:, 0], src[:, 1], src[:, 2]].clone()
    out[torch.from_numpy(geometry.kind == NEWLINE)] = 0.0
    return out


def pixel_features(
    views: Tensor,
    geometry: PatchGeometry,
    patch_size: int,
    *,
    colour_weight: float = DEFAULT_COLOUR_WEIGHT,
    position_weight: float = DEFAULT_POSITION_WEIGHT,
) -> Tensor:
    """The documented patch descriptor (module docstring) for every packed token: (L, 3 p^2 + 5) fp32."""
    for name, value in (("colour_weight", colour_weight), ("position_weight", position_weight)):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    pixels = token_pixels(views, geometry, patch_size)
    mean = pixels.mean(dim=(-2, -1))  # (L, 3)
    texture = (pixels - mean[..., None, None]).flatten(1)
    h, w = geometry.image_size
    boxes = torch.from_numpy(geometry.boxes)
    centre = torch.stack([(boxes[:, 0] + boxes[:, 2]) / w - 1.0, (boxes[:, 1] + boxes[:, 3]) / h - 1.0], dim=-1)
    centre = torch.nan_to_num(centre.float(), nan=0.0)  # tokens without pixels
    centre[torch.from_numpy(geometry.kind == NEWLINE)] = 0.0
    return torch.cat([texture, colour_weight * patch_size * mean, position_weight * patch_size * centre], dim=-1)
