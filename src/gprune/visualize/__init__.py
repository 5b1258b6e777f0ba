"""See what a pruning method keeps on a photo and how G-Prune's information flows (issue 6).

`visualize_pruning(image, ...)` returns a `PruningView` of plain arrays (kept mask, scores, per-step
flow, token-to-pixel boxes, overlays); `plot_pruning(view)` draws the figure with matplotlib, the
optional `viz` extra, imported only when plotting. The token-to-pixel geometry reproduces transformers'
LLaVA-1.5 and LLaVA-NeXT packing exactly (`gprune.visualize.geometry`).
"""

from gprune.visualize.analysis import (
    FEATURE_SOURCES,
    PhotoTokens,
    PruningView,
    load_photo,
    photo_tokens,
    visualize_pruning,
)
from gprune.visualize.geometry import (
    LLAVA_NEXT_PINPOINTS,
    PACKINGS,
    Packing,
    PatchGeometry,
    anyres_geometry,
    vit_geometry,
)
from gprune.visualize.plot import figure_size_px, plot_pruning, save_figure

__all__ = [
    "FEATURE_SOURCES",
    "LLAVA_NEXT_PINPOINTS",
    "PACKINGS",
    "Packing",
    "PatchGeometry",
    "PhotoTokens",
    "PruningView",
    "anyres_geometry",
    "figure_size_px",
    "load_photo",
    "photo_tokens",
    "plot_pruning",
    "save_figure",
    "visualize_pruning",
    "vit_geometry",
]
