"""Registry of token selectors. Every method chooses which visual tokens to keep; nothing else.

A method is a function ``(features, mask, counts, **params) -> list[LongTensor]``: `features` is fp32
(B, N, D), `mask` (B, N) bool marks valid tokens, `counts[b]` is how many tokens item b keeps (at most
its valid count). It returns, per item, the kept indices in ascending order. Adding a method is one file
in this package that decorates its function with ``@register_method("name")`` and one import line below.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from torch import Tensor


class Selector(Protocol):
    def __call__(
        self, features: Tensor, mask: Tensor, counts: Sequence[int], **params: Any
    ) -> list[Tensor]: ...


_REGISTRY: dict[str, Selector] = {}


def register_method(name: str) -> Callable[[Selector], Selector]:
    """Register a selector under `name` (lower case, unique)."""

    def decorate(fn: Selector) -> Selector:
        if name in _REGISTRY:
            raise ValueError(f"a pruning method named {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return decorate


def get_method(name: str) -> Selector:
    """The selector registered as `name`; the error lists the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown pruning method {name!r}; available: {', '.join(available_methods())}") from None


def available_methods() -> list[str]:
    return sorted(_REGISTRY)


from gprune.methods import dart as _dart  # noqa: E402,F401  (registers "dart")
from gprune.methods import divprune as _divprune  # noqa: E402,F401  (registers "divprune")
from gprune.methods import gprune as _gprune  # noqa: E402,F401  (registers "gprune")
from gprune.methods import gprune_paper as _gprune_paper  # noqa: E402,F401  (registers "gprune-paper")
from gprune.methods import l2norm as _l2norm  # noqa: E402,F401  (registers "l2norm")
from gprune.methods import random as _random  # noqa: E402,F401  (registers "random")
from gprune.methods import uniform as _uniform  # noqa: E402,F401  (registers "uniform")
