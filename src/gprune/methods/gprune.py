"""G-Prune as a registered method: graph scores, then the top-k per item.

`precision` picks the arithmetic: "fp32" (default) computes the method accurately in fp32;
"released-fp16" repeats the fp16 arithmetic of the authors' released code as their CUDA run computed
it (`gprune.released_fp16`), to reproduce the paper's selections exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import Tensor

from gprune.core import (
    DEFAULT_ITERATIONS,
    DEFAULT_SIMILARITY_THRESHOLD,
    DEFAULT_TEMPERATURE,
    graph_scores,
    top_indices,
)
from gprune.methods import register_method
from gprune.released_fp16 import released_fp16_scores

Precision = Literal["fp32", "released-fp16"]
PRECISIONS: tuple[str, ...] = ("fp32", "released-fp16")


def check_precision(precision: object) -> Precision:
    """Return `precision` if it names a supported arithmetic, else raise naming the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision  # type: ignore[return-value]


@register_method("gprune")
def select_gprune(
    features: Tensor,
    mask: Tensor,
    counts: Sequence[int],
    *,
    similarity_threshold: float = DEFAULT_SIMILARITY_THRESHOLD,
    temperature: float = DEFAULT_TEMPERATURE,
    iterations: int = DEFAULT_ITERATIONS,
    precision: Precision = "fp32",
) -> list[Tensor]:
    """Top-`counts[b]` graph scores per item; ties go to the lower index (as CUDA's topk gathers ties)."""
    score = graph_scores if check_precision(precision) == "fp32" else released_fp16_scores
    scores = score(
        features,
        similarity_threshold=similarity_threshold,
        temperature=temperature,
        iterations=iterations,
        mask=mask,
    )
    return [top_indices(row, k) for row, k in zip(scores, counts, strict=True)]
