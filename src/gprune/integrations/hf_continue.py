"""Continue ``generate`` from a cache that a pruned ``generate`` returned.

The cache holds the *pruned* prompt, while the sequences the caller got back (and passes again to
continue, as transformers' "continue from past key values" pattern does) hold the *original* prompt.
`CacheLedger` remembers, per cache object, the pruned prompt it holds; `continuation_kwargs` rewrites
the next call's original-layout prompt into that layout, with the positions the first call's decoding
would have given the following tokens (last kept position + 1, + 2, ...).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class PrunedPrefix:
    """The pruned prompt a cache holds (``input_ids`` etc. of the pruned call) and the prompt it stands for."""

    original_ids: Tensor
    tensors: dict[str, Tensor]  # input_ids, attention_mask, position_ids and per-token tensors, pruned


class CacheLedger:
    """Which pruned prompt each cache returned by a pruned ``generate`` holds; a dropped cache is forgotten."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref[Any], PrunedPrefix]] = {}

    def remember(self, cache: Any, prefix: PrunedPrefix) -> None:
        if cache is None:
            return
        self._entries = {k: v for k, v in self._entries.items() if v[0]() is not None}
        with contextlib.suppress(TypeError):  # a legacy tuple cache cannot be referenced weakly: not tracked
            self._entries[id(cache)] = (weakref.ref(cache), prefix)

    def lookup(self, cache: Any) -> PrunedPrefix | None:
        entry = self._entries.get(id(cache)) if cache is not None else None
        return entry[1] if entry is not None and entry[0]() is cache else None

    def __deepcopy__(self, memo: dict[int, Any]) -> CacheLedger:
        return CacheLedger()  # a copied model has returned no cache yet


def continuation_kwargs(
    prefix: PrunedPrefix, kwargs: Mapping[str, Any], per_token_keys: Iterable[str]
) -> dict[str, Any] | None:
    """The call in the layout the cache holds, or None when `kwargs` do not continue the cached prompt."""
    ids = kwargs.get("input_ids")
    original = prefix.original_ids
    length = original.shape[1]
    if not isinstance(ids, Tensor) or ids.shape[0] != original.shape[0] or ids.shape[1] < length:
        return None
    if not torch.equal(ids[:, :length], original.to(ids.device)):
        return None
    tail = ids[:, length:]
    mask = kwargs.get("attention_mask")
    tail_mask = mask[:, length:] if isinstance(mask, Tensor) else torch.ones_like(tail)
    positions = prefix.tensors["position_ids"]
    steps = torch.arange(1, tail.shape[1] + 1, device=positions.device)
    tail_positions = positions[..., -1:] + steps
    call = {
        **kwargs,
        "input_ids": torch.cat([prefix.tensors["input_ids"].to(ids.device), tail], dim=1),
        "attention_mask": torch.cat([prefix.tensors["attention_mask"].to(tail_mask.device), tail_mask], dim=1),
        "position_ids": torch.cat([positions, tail_positions], dim=-1),
    }
    for key in per_token_keys:
        value = kwargs.get(key)
        if isinstance(value, Tensor) and key in prefix.tensors:
            call[key] = torch.cat([prefix.tensors[key].to(value.device), value[:, length:]], dim=1)
    return call
