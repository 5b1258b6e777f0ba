"""Registry of token selectors. Every method chooses which visual tokens to keep; nothing else.

A method is a function ``(features, mask, counts, **params) -> list[LongTensor]``: `features` is fp32
(B, N, D), `mask` (B, N) bool marks valid tokens, `counts[b]` is how many tokens item b keeps (at most
its valid count). It returns, per item, the kept indices in ascending order. Adding a method is one file
in this package that decorates its function with ``@register_method("name")`` and one import line below.
A method may also declare a `Grouping`: how its released code groups an image's tokens and counts a
ratio (DivPrune's released code scores the whole packed image and rounds the count).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from torch import Tensor


class Selector(Protocol):
    def __call__(
        self, features: Tensor, mask: Tensor, counts: Sequence[int], **params: Any
    ) -> list[Tensor]: ...


@dataclass(frozen=True)
class Grouping:
    """How a method groups one image's tokens and counts a keep ratio.

    whole_image: score the packed image as one group, always-kept tokens (LLaVA-NeXT's newlines) included,
        instead of the layout's groups. rounding: a ratio keeps ``int(r * n)`` ("floor", the G-Prune
        release) or ``int(round(r * n))`` ("round", the DivPrune release) tokens of a group.
    """

    whole_image: bool = False
    rounding: Literal["floor", "round"] = "floor"


_REGISTRY: dict[str, Selector] = {}
_GROUPING: dict[str, Grouping] = {}


def register_method(name: str, *, grouping: Grouping | None = None) -> Callable[[Selector], Selector]:
    """Register a selector under `name` (lower case, unique), with the layout's grouping unless one is given."""

    def decorate(fn: Selector) -> Selector:
        if name in _REGISTRY:
            raise ValueError(f"a pruning method named {name!r} is already registered")
        _REGISTRY[name] = fn
        _GROUPING[name] = grouping or Grouping()
        return fn

    return decorate


def get_method(name: str) -> Selector:
    """The selector registered as `name`; the error lists the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown pruning method {name!r}; available: {', '.join(available_methods())}") from None


def get_grouping(name: str) -> Grouping:
    """How the method registered as `name` groups and counts tokens (see `Grouping`)."""
    get_method(name)  # the error for an unknown name
    return _GROUPING[name]


def available_methods() -> list[str]:
    return sorted(_REGISTRY)


from gprune.methods import dart as _dart  # noqa: E402,F401  (registers "dart")
from gprune.methods import divprune as _divprune  # noqa: E402,F401  (registers "divprune")
from gprune.methods import evs as _evs  # noqa: E402,F401  (registers "evs")
from gprune.methods import gprune as _gprune  # noqa: E402,F401  (registers "gprune")
from gprune.methods import gprune_paper as _gprune_paper  # noqa: E402,F401  (registers "gprune-paper")
from gprune.methods import l2norm as _l2norm  # noqa: E402,F401  (registers "l2norm")
from gprune.methods import random as _random  # noqa: E402,F401  (registers "random")
from gprune.methods import uniform as _uniform  # noqa: E402,F401  (registers "uniform")
