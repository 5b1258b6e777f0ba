"""DivPrune-style pruning: the max-min diverse subset under cosine distance, chosen greedily.

After Alvar et al., "DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models"
(CVPR 2025, arXiv 2503.02175); released code vbdi/divprune, ``LLaVA/llava/model/llava_arch.py``
(``DivPrune``). With d(i, j) = 1 - cos(x_i, x_j): the first token is the one whose
nearest other token is farthest; each next token is the one farthest from the tokens already kept
(largest minimum distance to the kept set). This is the classic greedy for the max-min diversity
problem (farthest-point sampling).

Differences from the authors' code, which only matter on exact ties: already kept tokens are excluded
explicitly (the original can pick a token twice when exact duplicates exist), ties go to the lower index,
and masked (padding) tokens never take part.

Two registered variants share this selection and differ in grouping and count:
- "divprune": the layout's groups (LLaVA-NeXT: base view and grid apart, newlines always kept), a ratio
  keeping ``int(r * n)`` per group, like every other method here;
- "divprune-released": as the released code, one set over the whole packed image (LLaVA-NeXT: base view,
  grid and newlines together, newlines prunable) and ``int(round(r * N))`` tokens (Python's round).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gprune.methods import Grouping, register_method


@register_method("divprune")
def select_divprune(features: Tensor, mask: Tensor, counts: Sequence[int]) -> list[Tensor]:
    """Greedy max-min diversity on cosine distance; per item, `counts[b]` tokens, ascending."""
    b, n, _ = features.shape
    unit = torch.nn.functional.normalize(features.masked_fill(~mask.unsqueeze(-1), 0.0), dim=-1)
    dist = 1.0 - unit @ unit.mT  # (B, N, N) cosine distance
    invalid = ~mask
    dist.masked_fill_(invalid.unsqueeze(-2) | invalid.unsqueeze(-1), float("inf"))  # padding is never near

    rows = torch.arange(b, device=features.device)
    # First pick: the token whose nearest other valid token is farthest (self-distance excluded).
    nearest = dist.clone()
    nearest.diagonal(dim1=-2, dim2=-1).fill_(float("inf"))
    nearest = nearest.amin(dim=-1)
    nearest = torch.where(torch.isinf(nearest) & mask, torch.full_like(nearest, 2.0), nearest)  # a lone token
    score = nearest.masked_fill(invalid, float("-inf"))

    max_k = max(counts)
    chosen = torch.empty(b, max_k, dtype=torch.long, device=features.device)
    min_dist = torch.full((b, n), float("inf"), device=features.device)
    taken = invalid.clone()
    for step in range(max_k):
        pick = score.argmax(dim=-1)  # first maximum: ties go to the lower index
        chosen[:, step] = pick
        taken[rows, pick] = True
        min_dist = torch.minimum(min_dist, dist[rows, pick])
        score = min_dist.masked_fill(taken, float("-inf"))
    return [torch.sort(chosen[i, :k]).values for i, k in enumerate(counts)]


@register_method("divprune-released", grouping=Grouping(whole_image=True, rounding="round"))
def select_divprune_released(features: Tensor, mask: Tensor, counts: Sequence[int]) -> list[Tensor]:
    """DivPrune's selection on the released grouping: the whole packed image, ``int(round(r * N))`` tokens."""
    return select_divprune(features, mask, counts)
