"""Random pruning: keep a uniformly random subset of the valid tokens, reproducibly per seed.

A strong baseline in the literature (random keeps tokens spread over the image). Each batch item draws
from its own generator seeded with `seed`, and draws only over its *valid* tokens, so an item's choice
does not depend on its batch neighbours or on how much padding the batch carries.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gprune.core import top_indices
from gprune.methods import register_method


@register_method("random")
def select_random(features: Tensor, mask: Tensor, counts: Sequence[int], *, seed: int = 0) -> list[Tensor]:
    """Keep `counts[b]` valid tokens of item b chosen uniformly at random (same seed, same choice)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"random pruning needs an int seed, got {seed!r}")
    kept = []
    for row_mask, k in zip(mask, counts, strict=True):
        valid = row_mask.nonzero().squeeze(-1).cpu()
        generator = torch.Generator().manual_seed(seed)
        keys = torch.rand(valid.numel(), generator=generator)
        chosen = valid[top_indices(keys, k)]
        kept.append(chosen.to(features.device))
    return kept
