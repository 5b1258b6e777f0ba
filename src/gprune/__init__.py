"""gprune: training-free visual token pruning for multimodal LLMs with G-Prune (Jiang et al., AAAI 2025).

The core (scoring, selection, layouts, methods, FLOPs) needs only torch. Every public name loads on first
access (PEP 562), so ``import gprune`` imports neither torch nor transformers (``gprune --help`` is fast) and
works next to any transformers version; the integration checks the version when it is first used.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from gprune.adapters import supported_model_types
    from gprune.config import PAPER_SIMILARITY_THRESHOLD, GPruneConfig
    from gprune.core import graph_scores, information_flow, keep_count, select_tokens
    from gprune.flops import kv_cache_bytes, llm_prefill_flops
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
    from gprune.layouts import (
        TokenLayout,
        kept_token_count,
        llava_next_layout,
        select_in_layout,
        select_llava_next,
        single_group_layout,
    )
    from gprune.methods import available_methods, get_method, register_method
    from gprune.video import kept_video_tokens, video_layout

# Every public name loads on first access, with the module that defines it: ``import gprune`` imports
# neither torch nor transformers, so ``gprune --help`` (whose entry point lives in this package) is fast.
_LAZY: dict[str, str] = {
    **dict.fromkeys(
        ("apply", "image_layout", "is_pruned", "kept_tokens", "last_report", "pruned", "pruning_config", "remove"),
        "gprune.integrations.hf",
    ),
    "supported_model_types": "gprune.adapters",
    "PAPER_SIMILARITY_THRESHOLD": "gprune.config",
    "GPruneConfig": "gprune.config",
    **dict.fromkeys(("graph_scores", "information_flow", "keep_count", "select_tokens"), "gprune.core"),
    **dict.fromkeys(("kv_cache_bytes", "llm_prefill_flops"), "gprune.flops"),
    **dict.fromkeys(
        (
            "TokenLayout",
            "kept_token_count",
            "llava_next_layout",
            "select_in_layout",
            "select_llava_next",
            "single_group_layout",
        ),
        "gprune.layouts",
    ),
    **dict.fromkeys(("available_methods", "get_method", "register_method"), "gprune.methods"),
    **dict.fromkeys(("kept_video_tokens", "video_layout"), "gprune.video"),
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
    "kept_video_tokens",
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
    "video_layout",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        try:  # a submodule not imported yet (``gprune.core`` after a bare ``import gprune``)
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
