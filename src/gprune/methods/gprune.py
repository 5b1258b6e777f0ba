"""G-Prune as a registered method: graph scores, then the top-k per item."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from gprune.core import (
    DEFAULT_ITERATIONS,
    DEFAULT_SIMILARITY_THRESHOLD,
    DEFAULT_TEMPERATURE,
    graph_scores,
    top_indices,
)
from gprune.methods import register_method


@register_method("gprune")
def select_gprune(
    features: Tensor,
    mask: Tensor,
    counts: Sequence[int],
    *,
    similarity_threshold: float = DEFAULT_SIMILARITY_THRESHOLD,
    temperature: float = DEFAULT_TEMPERATURE,
    iterations: int = DEFAULT_ITERATIONS,
) -> list[Tensor]:
    scores = graph_scores(
        features,
        similarity_threshold=similarity_threshold,
        temperature=temperature,
        iterations=iterations,
        mask=mask,
    )
    return [top_indices(row, k) for row, k in zip(scores, counts, strict=True)]
