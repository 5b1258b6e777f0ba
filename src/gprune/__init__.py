"""gprune: training-free visual token pruning for multimodal LLMs with G-Prune (Jiang et al., AAAI 2025).

The core (scoring, selection, layouts, methods, FLOPs) needs only torch. The Hugging Face names (`apply`,
`kept_tokens`, ...) load on first access (PEP 562), so ``import gprune`` never imports transformers and
works next to any transformers version; the integration checks the version when it is first used.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from gprune.config import PAPER_SIMILARITY_THRESHOLD, GPruneConfig
from gprune.core import graph_scores, information_flow, keep_count, select_tokens
from gprune.flops import kv_cache_bytes, llm_prefill_flops
from gprune.layouts import (
    TokenLayout,
    kept_token_count,
    llava_next_layout,
    select_in_layout,
    select_llava_next,
    single_group_layout,
)
from gprune.methods import available_methods, get_method, register_method

if TYPE_CHECKING:  # pragma: no cover
    from gprune.adapters import supported_model_types
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

# Names loaded on first access, and the module that defines each.
_LAZY: dict[str, str] = {
    **dict.fromkeys(
        ("apply", "image_layout", "is_pruned", "kept_tokens", "last_report", "pruned", "pruning_config", "remove"),
        "gprune.integrations.hf",
    ),
    "supported_model_types": "gprune.adapters",
}

try:
    __version__ = version("gprune")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = [
    "PAPER_SIMILARITY_THRESHOLD",
    "GPruneConfig",
    "TokenLayout",
    "__version__",
    "apply",
    "available_methods",
    "get_method",
    "graph_scores",
    "image_layout",
    "information_flow",
    "is_pruned",
    "keep_count",
    "kept_token_count",
    "kept_tokens",
    "kv_cache_bytes",
    "last_report",
    "llava_next_layout",
    "llm_prefill_flops",
    "pruned",
    "pruning_config",
    "register_method",
    "remove",
    "select_in_layout",
    "select_llava_next",
    "select_tokens",
    "single_group_layout",
    "supported_model_types",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
