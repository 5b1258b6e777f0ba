"""Integrations of gprune with model runtimes (Hugging Face `transformers` first).

Names load on first access, so importing one integration (or `hf_version`) does not import the others.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
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


def __getattr__(name: str) -> Any:
    if name in __all__:  # every public name comes from the transformers integration
        return getattr(importlib.import_module("gprune.integrations.hf"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
