"""Integrations of gprune with model runtimes (Hugging Face `transformers` first)."""

from gprune.integrations.hf import (
    apply,
    image_layout,
    is_pruned,
    kept_tokens,
    last_report,
    pruned,
    pruning_config,
    remove,
)

__all__ = ["apply", "image_layout", "is_pruned", "kept_tokens", "last_report", "pruned", "pruning_config", "remove"]
