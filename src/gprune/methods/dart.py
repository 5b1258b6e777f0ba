"""DART-style pruning: keep pivot tokens, then the tokens least duplicated with respect to the pivots.

After Wen et al., "Stop Looking for Important Tokens in Multimodal Language Models: Duplication Matters
More" (DART, arXiv 2502.11494). The authors pick pivots by the L1 norm of the keys at LLM layer 2 (image
and text pivots) and, for each pivot in turn, keep the not-yet-kept image tokens with the lowest cosine
similarity to it. Here it runs at the embedding level, before the LLM, like every method in this
registry: pivots are the `num_pivots` image tokens with the largest L1 norm of their projected feature
(no text pivots: the selector sees no text), and the remaining budget is split evenly over the pivots
(the first ``(k - p) % p`` pivots take one token more), so every item keeps exactly its count.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gprune.core import top_indices
from gprune.methods import register_method

DEFAULT_NUM_PIVOTS = 8


@register_method("dart")
def select_dart(
    features: Tensor, mask: Tensor, counts: Sequence[int], *, num_pivots: int = DEFAULT_NUM_PIVOTS
) -> list[Tensor]:
    """Pivots by L1 norm, then per pivot the least similar remaining tokens; `counts[b]` per item."""
    if isinstance(num_pivots, bool) or not isinstance(num_pivots, int) or num_pivots < 1:
        raise ValueError(f"dart: num_pivots must be an int >= 1, got {num_pivots!r}")
    x = features.masked_fill(~mask.unsqueeze(-1), 0.0)
    unit = torch.nn.functional.normalize(x, dim=-1)
    l1 = x.abs().sum(dim=-1).masked_fill(~mask, float("-inf"))
    kept = []
    for item in range(x.shape[0]):
        k = counts[item]
        p = min(num_pivots, k)
        pivots = torch.sort(l1[item], descending=True, stable=True).indices[:p]  # strongest first
        taken = ~mask[item].clone()
        taken[pivots] = True
        rest = k - p
        chosen = [pivots]
        for j, pivot in enumerate(pivots.tolist()):
            quota = rest // p + (1 if j < rest % p else 0)
            if quota == 0:
                continue
            similarity = unit[item] @ unit[item, pivot]
            similarity = similarity.masked_fill(taken, float("inf"))
            picked = top_indices(-similarity, quota)  # lowest similarity; ties go to the lower index
            taken[picked] = True
            chosen.append(picked)
        kept.append(torch.sort(torch.cat(chosen)).values)
    return kept
