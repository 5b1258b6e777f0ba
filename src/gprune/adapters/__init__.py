"""Model adapters, one per family, looked up by ``config.model_type`` (see `gprune.adapters.base`).

Register a family with ``@register_adapter`` on a `ModelAdapter` subclass whose `model_types` lists
the ``config.model_type`` values it serves, and add its module to `_ADAPTER_MODULES` below so it is
imported (lazily, on first lookup: importing gprune does not import model code).
"""

from __future__ import annotations

import importlib
from typing import Any

from gprune.adapters.base import EncodedImages, ImageTokens, ModelAdapter
from gprune.errors import UserError

_REGISTRY: dict[str, type[ModelAdapter]] = {}

_ADAPTER_MODULES: tuple[str, ...] = (
    "gprune.adapters.llava",
    "gprune.adapters.gemma3",
    "gprune.adapters.qwen_vl",
    "gprune.adapters.idefics3",
    "gprune.adapters.internvl",
)
_loaded = False


def register_adapter(cls: type[ModelAdapter]) -> type[ModelAdapter]:
    """Class decorator: serve every ``model_type`` in ``cls.model_types`` with `cls`."""
    if not cls.model_types:
        raise ValueError(f"{cls.__name__} declares no model_types")
    for model_type in cls.model_types:
        if model_type in _REGISTRY and _REGISTRY[model_type] is not cls:
            raise ValueError(f"model_type {model_type!r} already has adapter {_REGISTRY[model_type].__name__}")
        _REGISTRY[model_type] = cls
    return cls


def _load_builtin_adapters() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name in _ADAPTER_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:  # a family still being written is simply absent
            if err.name != name:
                raise


def supported_model_types() -> list[str]:
    """The ``config.model_type`` values gprune can prune."""
    _load_builtin_adapters()
    return sorted(_REGISTRY)


def _model_type(model_or_config: Any) -> str:
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if not isinstance(model_type, str):
        raise UserError(f"cannot tell the model type of {type(model_or_config).__name__}: it has no config.model_type")
    return model_type


def get_adapter_class(model_or_config: Any) -> type[ModelAdapter]:
    """The adapter class for a model or config; an unsupported model gets a `UserError` listing the supported."""
    _load_builtin_adapters()
    model_type = _model_type(model_or_config)
    try:
        return _REGISTRY[model_type]
    except KeyError:
        raise UserError(
            f"gprune does not support model_type {model_type!r}; supported: {', '.join(supported_model_types())}"
        ) from None


def get_adapter(model: Any) -> ModelAdapter:
    """An adapter instance bound to `model`; first checks that the installed transformers is supported.

    Every path that runs a model through gprune (`gprune.apply`, model features) binds an adapter here,
    so an unsupported transformers fails with a clear message instead of deep inside a model call.
    """
    from gprune.integrations.hf_version import require_transformers

    require_transformers()
    return get_adapter_class(model)(model)


__all__ = [
    "EncodedImages",
    "ImageTokens",
    "ModelAdapter",
    "get_adapter",
    "get_adapter_class",
    "register_adapter",
    "supported_model_types",
]
