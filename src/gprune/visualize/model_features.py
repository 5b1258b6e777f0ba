"""The model's own visual tokens for `--features model`: projected image features, packed as the LLM sees them.

Runs through the model's gprune adapter (`gprune.adapters`), so the features are exactly those the
pruning pipeline scores; their order is checked against the token-to-pixel geometry.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gprune.errors import UserError
from gprune.visualize.geometry import MODEL_TYPES, Packing, PatchGeometry
from gprune.visualize.pixels import default_image_processor


def load_model(
    model: Any,
    *,
    device: str = "auto",
    dtype: str = "auto",
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[Any, Any]:
    """(model, image processor or None): `model` as given if already loaded, else loaded from a path / hub id.

    A path or hub id loads through `gprune.cli_model.load_pretrained`, the loading path of every gprune
    command, with its options and one-line errors: `device` (auto: cuda when torch sees a GPU, else
    cpu), `dtype` (auto: float16 on a GPU, float32 on cpu), `attn_implementation`, `trust_remote_code`.
    The checkpoint must hold a processor (its image processor is returned). The options do not apply to
    a model that is already loaded.
    """
    if not isinstance(model, str):
        if getattr(getattr(model, "config", None), "model_type", None) is None:
            raise UserError(f"model must be a transformers model or a path / hub id, got {type(model).__name__}")
        return model, None
    from gprune.cli_model import load_pretrained

    def check_model_type(config: Any) -> None:
        if config.model_type not in MODEL_TYPES:
            raise UserError(
                f"visualize maps tokens to pixels for model_type {', '.join(MODEL_TYPES)}; {model!r} is "
                f"{config.model_type!r}"
            )

    loaded, processor = load_pretrained(
        model,
        device=device,
        dtype=dtype,
        attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code,
        check_config=check_model_type,
    )
    return loaded, processor.image_processor


def model_image_processor(model: Any) -> Any:
    """The llava-1.5 / llava-v1.6 default image processor for the model's config (PIL backend)."""
    return default_image_processor(Packing.from_model_config(model.config))


@torch.no_grad()
def model_features(model: Any, views: Tensor, geometry: PatchGeometry) -> Tensor:
    """(L, D) fp32 projected features of one photo's packed visual tokens (newlines included)."""
    from gprune.adapters import get_adapter

    adapter = get_adapter(model)
    param = next(model.parameters())
    pixel_values = views.to(device=param.device, dtype=param.dtype)
    if model.config.model_type == "llava_next":
        inputs = {
            "pixel_values": pixel_values.unsqueeze(0),
            "image_sizes": torch.tensor([geometry.image_size], device=param.device),
        }
    else:
        inputs = {"pixel_values": pixel_values}
    features = adapter.encode_images(inputs).images[0].features.float().cpu()
    if features.shape[0] != geometry.num_tokens:
        raise UserError(
            f"the model packs {features.shape[0]} visual tokens for this photo but the pixel geometry has "
            f"{geometry.num_tokens} (vision_feature_select_strategy 'full' keeps the CLS token, which has no pixels)"
        )
    return features
