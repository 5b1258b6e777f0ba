"""DART-style pruning: keep pivot tokens, then the tokens least duplicated with respect to the pivots.

After Wen et al., "Stop Looking for Important Tokens in Multimodal Language Models: Duplication Matters
More" (DART, arXiv 2502.11494); released code ZichenWen1/DART,
``llava/model/language_model/modeling_llama_self.py`` (``get_retained_image_token``). The authors pick
pivots by the L1 norm of the keys at LLM layer K = 2 (image and text pivots) and, for each pivot in turn,
keep the not-yet-kept image tokens with the lowest cosine similarity to it (hidden states after layer K).
Here it runs at the embedding level, before the LLM, like every method in this registry: pivots are the
`num_pivots` image tokens with the largest L1 norm of their projected feature (no text pivots: the
selector sees no text).

Two registered variants differ in the order pivots take their turn and in the quota:

- "dart" follows the release: pivots are visited in the iteration order of ``list(set(positions))``
  (CPython's set order of the pivots' sequence positions, ``sequence_offset`` + index) and each takes
  ``M // p`` tokens, M = k - p; so that an item keeps exactly k tokens, the ``M % p`` left over go one
  each to the first pivots of that order in a second round (the release keeps ``p + p * (M // p)``).
- "dart-strongest-first" visits pivots by decreasing L1 norm and gives the first ``M % p`` pivots one
  token more in the first round. Its choice does not depend on where the image sits in the prompt (the
  released order changes when the prompt grows by one token).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gprune.core import top_indices
from gprune.methods import register_method

DEFAULT_NUM_PIVOTS = 8


def released_pivot_order(pivots: Sequence[int], sequence_offset: int = 0) -> list[int]:
    """The pivots in the order the released code visits them: ``list(set(positions))`` in CPython.

    `pivots` are token indices strongest first (the order ``topk`` returns and the set is filled in);
    the released code holds sequence positions, ``sequence_offset + index``, whose set order differs.
    """
    positions = [sequence_offset + int(p) for p in pivots]
    return [position - sequence_offset for position in list(set(positions))]


def _check(num_pivots: object, sequence_offset: object) -> None:
    if isinstance(num_pivots, bool) or not isinstance(num_pivots, int) or num_pivots < 1:
        raise ValueError(f"dart: num_pivots must be an int >= 1, got {num_pivots!r}")
    if isinstance(sequence_offset, bool) or not isinstance(sequence_offset, int) or sequence_offset < 0:
        raise ValueError(f"dart: sequence_offset must be an int >= 0, got {sequence_offset!r}")


def _select(
    features: Tensor, mask: Tensor, counts: Sequence[int], num_pivots: int, order: str, offset: int
) -> list[Tensor]:
    x = features.masked_fill(~mask.unsqueeze(-1), 0.0)
    unit = torch.nn.functional.normalize(x, dim=-1)
    l1 = x.abs().sum(dim=-1).masked_fill(~mask, float("-inf"))
    kept = []
    for item in range(x.shape[0]):
        valid = mask[item].nonzero().squeeze(-1)
        k = counts[item]
        p = min(num_pivots, k)
        strongest = valid[torch.sort(l1[item, valid], descending=True, stable=True).indices[:p]]
        taken = ~mask[item].clone()
        taken[strongest] = True
        rest = k - p
        if order == "released":  # set order of sequence positions; valid rank, so padding does not matter
            rank = {int(v): r for r, v in enumerate(valid.tolist())}
            ranks = released_pivot_order([rank[int(s)] for s in strongest.tolist()], offset)
            pivots = [int(valid[r]) for r in ranks]
            turns = [(pivot, rest // p) for pivot in pivots] + [(pivot, 1) for pivot in pivots[: rest % p]]
        else:
            turns = [(int(pivot), rest // p + (1 if j < rest % p else 0)) for j, pivot in enumerate(strongest.tolist())]
        chosen = [strongest]
        for pivot, quota in turns:
            if quota == 0:
                continue
            similarity = (unit[item] @ unit[item, pivot]).masked_fill(taken, float("inf"))
            picked = top_indices(-similarity, quota)  # lowest similarity; ties go to the lower index
            taken[picked] = True
            chosen.append(picked)
        kept.append(torch.sort(torch.cat(chosen)).values)
    return kept


@register_method("dart")
def select_dart(
    features: Tensor,
    mask: Tensor,
    counts: Sequence[int],
    *,
    num_pivots: int = DEFAULT_NUM_PIVOTS,
    sequence_offset: int = 0,
) -> list[Tensor]:
    """DART as released: pivots by L1 norm, visited in ``list(set(positions))`` order, ``M // p`` tokens each."""
    _check(num_pivots, sequence_offset)
    return _select(features, mask, counts, num_pivots, "released", sequence_offset)


@register_method("dart-strongest-first")
def select_dart_strongest_first(
    features: Tensor, mask: Tensor, counts: Sequence[int], *, num_pivots: int = DEFAULT_NUM_PIVOTS
) -> list[Tensor]:
    """DART with pivots visited strongest first; the quota remainder goes to the strongest pivots."""
    _check(num_pivots, 0)
    return _select(features, mask, counts, num_pivots, "strongest-first", 0)
