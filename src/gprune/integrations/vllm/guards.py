"""Refuse a ``gprune`` override on an architecture the plugin does not prune, when the engine starts.

vLLM gives plugins no hook that sees every model's config, so without this a ``--hf-overrides
'{"gprune": ...}'`` on, say, a LLaVA-1.5 checkpoint would be silently ignored and the deployment would run
unpruned. The plugin therefore also registers, for the families gprune prunes with transformers but not
yet in vLLM, a subclass of vLLM's own class that only checks for the override in ``__init__`` and otherwise
is that class (same weights, processor, interfaces). The classes are made on first lookup (PEP 562), from
vLLM's own table of built-in architectures.
"""

from __future__ import annotations

import importlib
from typing import Any

from gprune.integrations.vllm.config import CONFIG_KEY, VllmConfigError

GUARDED: tuple[str, ...] = (
    "LlavaForConditionalGeneration",
    "LlavaOnevisionForConditionalGeneration",
    "Mistral3ForConditionalGeneration",
    "Gemma3ForConditionalGeneration",
    "Qwen3VLForConditionalGeneration",
    "Idefics3ForConditionalGeneration",
    "SmolVLMForConditionalGeneration",
    "InternVLForConditionalGeneration",
)
"""Architectures gprune prunes with `gprune.apply` but not in vLLM; a ``gprune`` override on them is an error."""

PREFIX = "Guarded"


def refuse_override(architecture: str, hf_config: Any) -> None:
    """Raise `VllmConfigError` if `hf_config` carries a ``gprune`` object (the plugin cannot prune this model)."""
    if getattr(hf_config, CONFIG_KEY, None) is not None:
        from gprune.integrations.vllm import PLUGIN_MODELS

        raise VllmConfigError(
            f"gprune's vLLM plugin does not support {architecture}; it prunes {', '.join(PLUGIN_MODELS)}. "
            f"Remove the '{CONFIG_KEY}' hf-override, or prune this model with gprune.apply (transformers)."
        )


def guarded_class(architecture: str) -> type:
    """vLLM's class for `architecture`, subclassed to refuse a ``gprune`` override at start-up."""
    from vllm.model_executor.models.registry import _VLLM_MODELS

    module, name = _VLLM_MODELS[architecture]
    base: Any = getattr(importlib.import_module(f"vllm.model_executor.models.{module}"), name)

    def __init__(self: Any, *, vllm_config: Any, prefix: str = "") -> None:
        refuse_override(architecture, vllm_config.model_config.hf_config)
        base.__init__(self, vllm_config=vllm_config, prefix=prefix)

    qualname = PREFIX + architecture
    return type(qualname, (base,), {"__init__": __init__, "__module__": __name__, "__qualname__": qualname})


def __getattr__(name: str) -> type:
    architecture = name.removeprefix(PREFIX)
    if not name.startswith(PREFIX) or architecture not in GUARDED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    cls = guarded_class(architecture)
    globals()[name] = cls
    return cls
