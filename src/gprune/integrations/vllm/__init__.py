"""gprune's vLLM plugin: G-Prune inside ``vllm serve`` for LLaVA-NeXT, Qwen2.5-VL and Qwen2-VL (docs/vllm.md).

vLLM runs `register` in each of its processes (entry point group ``vllm.general_plugins``, installed with
``pip install 'gprune[vllm]'``). It re-registers the built-in architecture names with subclasses of
vLLM's own model classes that prune, each carrying its processor, so a user's checkpoint needs no
change. For the families gprune prunes only with transformers (`guards.GUARDED`) it registers vLLM's own
class plus a start-up check, so a ``gprune`` override there fails instead of being ignored. The classes
load lazily (``module:Class``), so registering imports no model code. Pruning is on only when the
deployment sets ``--hf-overrides '{"gprune": {...}}'``; without it the classes behave as vLLM's.
"""

from __future__ import annotations

PLUGIN_MODELS: dict[str, str] = {
    "LlavaNextForConditionalGeneration": (
        "gprune.integrations.vllm.llava_next:GPruneLlavaNextForConditionalGeneration"
    ),
    "Qwen2_5_VLForConditionalGeneration": (
        "gprune.integrations.vllm.qwen_vl:GPruneQwen2_5_VLForConditionalGeneration"
    ),
    "Qwen2VLForConditionalGeneration": "gprune.integrations.vllm.qwen_vl:GPruneQwen2VLForConditionalGeneration",
}
"""Architecture name (as in a checkpoint's ``config.json``) -> the pruning class vLLM loads for it."""


def register() -> None:
    """Entry point of ``vllm.general_plugins``: point the supported architecture names at our classes.

    Safe to call many times (vLLM may load plugins more than once per process).
    """
    from vllm import ModelRegistry

    from gprune.integrations.vllm.guards import GUARDED, PREFIX

    for architecture, target in PLUGIN_MODELS.items():
        ModelRegistry.register_model(architecture, target)
    for architecture in GUARDED:
        if architecture in ModelRegistry.get_supported_archs():
            ModelRegistry.register_model(architecture, f"gprune.integrations.vllm.guards:{PREFIX}{architecture}")


__all__ = ["PLUGIN_MODELS", "register"]
