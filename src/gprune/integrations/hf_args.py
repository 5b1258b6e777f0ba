"""Read transformers call arguments by what they mean, not by one release's name.

transformers 5.24 renamed the KV-cache argument ``past_key_values`` to ``cache`` (the old name is a
deprecated alias until 5.40) and model outputs carry ``cache``. Code that looks the cache up under one
name breaks silently on the other release, so every lookup goes through here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

# Names under which a call or an output has carried the KV cache, newest first.
CACHE_NAMES = ("cache", "past_key_values")


def _is_cache(value: Any) -> bool:
    from transformers.cache_utils import Cache

    return isinstance(value, Cache)


def call_cache(kwargs: Mapping[str, Any]) -> Any:
    """The KV cache a call carries, whatever it is named (a `Cache` under any key, or a legacy value), or None."""
    for name in CACHE_NAMES:
        if kwargs.get(name) is not None:
            return kwargs[name]
    return next((v for v in kwargs.values() if _is_cache(v)), None)


def output_cache(output: Any) -> Any:
    """The KV cache a model output returns (``cache`` from 5.24, ``past_key_values`` before), or None."""
    for name in CACHE_NAMES:
        value = getattr(output, name, None) if not isinstance(output, Mapping) else output.get(name)
        if value is not None:
            return value
    return None


def cache_keyword(fn: Callable[..., Any]) -> str:
    """The name `fn` (a model's ``forward`` / ``generate``) takes the cache under in the installed release."""
    parameters = inspect.signature(fn).parameters
    return next((name for name in CACHE_NAMES if name in parameters), CACHE_NAMES[-1])
