"""G-Prune with the paper's best ablation threshold (s = 0.7) instead of the released code's 0.5.

Registered as "gprune-paper" so sweeps can compare both settings by name; otherwise identical to
"gprune" (same temperature, iterations and precision; any of them can be overridden through `method_params`;
`GPruneConfig.precision` is passed on).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from gprune.core import DEFAULT_ITERATIONS, DEFAULT_TEMPERATURE
from gprune.methods import register_method
from gprune.methods.gprune import Precision, select_gprune


@register_method("gprune-paper")
def select_gprune_paper(
    features: Tensor,
    mask: Tensor,
    counts: Sequence[int],
    *,
    similarity_threshold: float | None = None,
    temperature: float = DEFAULT_TEMPERATURE,
    iterations: int = DEFAULT_ITERATIONS,
    precision: Precision = "fp32",
) -> list[Tensor]:
    """G-Prune scoring with threshold `PAPER_SIMILARITY_THRESHOLD` (0.7) unless one is given."""
    # Imported here: gprune.config imports this package, so a module-level import would be circular.
    from gprune.config import PAPER_SIMILARITY_THRESHOLD

    threshold = PAPER_SIMILARITY_THRESHOLD if similarity_threshold is None else similarity_threshold
    return select_gprune(
        features,
        mask,
        counts,
        similarity_threshold=threshold,
        temperature=temperature,
        iterations=iterations,
        precision=precision,
    )
