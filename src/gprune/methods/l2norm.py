"""L2-norm pruning: keep the tokens with the largest feature norm.

The G-Prune paper's own ablation: the norm is G-Prune's initial information w_i, so this is G-Prune
without the graph propagation (T = 0).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from gprune.core import top_indices
from gprune.methods import register_method


@register_method("l2norm")
def select_l2norm(features: Tensor, mask: Tensor, counts: Sequence[int]) -> list[Tensor]:
    """Keep the `counts[b]` valid tokens of item b with the largest L2 norm (ties: lower index)."""
    norms = features.masked_fill(~mask.unsqueeze(-1), 0.0).norm(dim=-1)
    norms = norms.masked_fill(~mask, float("-inf"))
    return [top_indices(row, k) for row, k in zip(norms, counts, strict=True)]
