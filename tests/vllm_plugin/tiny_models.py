"""Tiny random-weight checkpoints that vLLM 0.32 (CPU) loads, saved with `save_pretrained`.

They are gprune's test models (`gprune.testing`) with what vLLM's CPU build needs: a text head_dim of 32
(CPU attention supports 32, 64, 80, ...), and for LLaVA-NeXT the CLIP tower's keys renamed from
transformers 5.19's ``vision_tower.embeddings...`` to the ``vision_tower.vision_model...`` vLLM expects.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from gprune.testing.llava import tiny_llava_next


def save_llava_next(path: Path, *, tile: int = 32, patch: int = 8, hidden: int = 128, layers: int = 2) -> Path:
    """A tiny LLaVA-NeXT (by default a 4x4-token base view of a 32 px tile, grids up to 2x2 / 1x3; head_dim 32).

    ``tile=336, patch=14`` gives the released model's token counts (576 + up to 2304 per image). The text
    model has 4 heads: `hidden` / 4 must be a CPU attention head size (32, 64, 80, ..., 256).
    """
    tiny = tiny_llava_next(hidden=hidden, layers=layers, dtype=torch.float32, tile=tile, patch=patch)
    tiny.model.save_pretrained(path)
    tiny.processor.save_pretrained(path)
    weights = path / "model.safetensors"
    tensors = load_file(weights)
    old, new = "vision_tower.", "vision_tower.vision_model."
    renamed = {new + k[len(old) :] if k.startswith(old) and not k.startswith(new) else k: v for k, v in tensors.items()}
    save_file(renamed, weights, metadata={"format": "pt"})
    return path


def save_qwen2_5_vl(
    path: Path, *, max_merged_tokens: int = 64, model_type: str = "qwen2_5_vl", hidden: int = 128, layers: int = 2
) -> Path:
    """A tiny Qwen2.5-VL or Qwen2-VL (`model_type`): by default text width 128, 4 heads of 32, 2 layers.

    Images are resized to between 2x2 and about `max_merged_tokens` merged tokens (14 px patches, 2x2 merge).
    """
    import transformers
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    from gprune.testing.qwen import tiny_qwen_config, tiny_qwen_tokenizer

    tokenizer = tiny_qwen_tokenizer()
    # 4 heads of hidden / 4: vLLM's CPU attention takes head_dim 32, 64, 80, ... (the default 128 gives 32)
    config = tiny_qwen_config(model_type, tokenizer, hidden=hidden, layers=layers, max_positions=4096)
    names = {"qwen2_5_vl": "Qwen2_5_VL", "qwen2_vl": "Qwen2VL"}[model_type]
    torch.manual_seed(0)
    getattr(transformers, f"{names}ForConditionalGeneration")(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    side = 28
    Qwen2VLImageProcessor(min_pixels=(2 * side) ** 2, max_pixels=max_merged_tokens * side**2).save_pretrained(path)
    return path


def save_llava(path: Path) -> Path:
    """A tiny LLaVA-1.5 (an architecture the plugin refuses to prune); saved as transformers writes it."""
    from gprune.testing.llava import tiny_llava

    tiny = tiny_llava(hidden=128, dtype=torch.float32)
    tiny.model.save_pretrained(path)
    tiny.processor.save_pretrained(path)
    return path
