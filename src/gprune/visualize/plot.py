"""The kept-token figure (matplotlib, the optional `viz` extra): overlays on top, information flow below.

Row 1: per group (LLaVA-NeXT: base view and high-res grid), the photo with pruned patches dimmed and kept
ones outlined. Then one row per group: the information each token holds after t = 0..T propagation steps
(t = 0 is the initial information ``||x||``), drawn at the tokens' pixel boxes, and last the rank of the
G-Prune score ``v_T / degree`` that the top-k keeps (ranks, since a few isolated tokens dwarf the rest).
Each flow map has its own colour scale (0 to its maximum): the total information is the same at every
step and only its distribution changes. A legend in the header explains the overlay's kept and pruned
patches, and a colour bar at the end of each flow row says what the colours mean.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gprune.errors import UserError
from gprune.visualize.analysis import PruningView
from gprune.visualize.render import DEFAULT_MAX_SIDE, DIM, legend_swatches, resize_photo

DEFAULT_WIDTH_PX = 1800
DEFAULT_DPI = 100
_TITLE_PX = 34  # room above each row for its titles
_HEADER_PX = 56  # room for the two-line figure title
_COLORBAR_FRACTION = 0.06  # right part of each flow row kept for its colour bar
CMAP = "magma"
KEPT_LABEL = "kept (gold outline)"
PRUNED_LABEL = f"pruned (dimmed to {DIM:.0%})"
FLOW_LABEL = "0 to each map's max"
RANK_TITLE = "score rank (bright = high)"


def require_matplotlib() -> Any:
    """The matplotlib module, or a `UserError` naming the extra to install."""
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise UserError(
            "plotting needs matplotlib, which is the optional 'viz' extra: pip install 'gprune[viz]'"
        ) from None
    return matplotlib


def figure_size_px(view: PruningView, width_px: int = DEFAULT_WIDTH_PX) -> tuple[int, int]:
    """(width, height) in pixels of `plot_pruning`'s figure, and so of the saved PNG at its dpi."""
    if width_px < 200:
        raise ValueError(f"width_px must be >= 200, got {width_px}")
    h, w = view.geometry.image_size
    groups = len(view.group_names)
    steps = view.flow.shape[0] + 1  # flow maps t = 0..T, then the score
    top = width_px / groups * h / w
    flow = width_px / steps * h / w
    return width_px, round(_HEADER_PX + top + _TITLE_PX + groups * (flow + _TITLE_PX))


def plot_pruning(view: PruningView, *, width_px: int = DEFAULT_WIDTH_PX, dpi: int = DEFAULT_DPI) -> Any:
    """A matplotlib `Figure` of what was kept and how information flowed (see the module docstring)."""
    require_matplotlib()
    from matplotlib.figure import Figure

    width, height = figure_size_px(view, width_px)
    h, w = view.geometry.image_size
    groups, steps = len(view.group_names), view.flow.shape[0] + 1
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    top = width / groups * h / w + _TITLE_PX
    flow = width / steps * h / w + _TITLE_PX
    rows = fig.subfigures(1 + groups, 1, height_ratios=[top + _HEADER_PX, *([flow] * groups)], hspace=0)
    counts = view.kept_counts()
    cfg = view.config
    rows[0].suptitle(
        f"{cfg.method}: {counts['total']} of {view.geometry.num_tokens} visual tokens kept "
        f"(keep {cfg.keep}, {view.feature_source} features)\ninformation flow on G-Prune's graph "
        f"(s = {cfg.similarity_threshold}, tau = {cfg.temperature}, T = {cfg.iterations})",
        fontsize=11 if width >= 900 else 9,
        x=0.005,
        ha="left",
    )
    _overlay_legend(rows[0])
    max_side = max(64, min(DEFAULT_MAX_SIDE * 2, round(width / groups)))
    axes = rows[0].subplots(1, groups, squeeze=False)[0]
    rows[0].subplots_adjust(left=0.005, right=0.995, bottom=0.005, top=1 - _HEADER_PX / (top + _HEADER_PX) - 0.04)
    for g, ax in enumerate(axes):
        n = len(view.group_tokens(g))
        ax.imshow(view.overlay(g, max_side), interpolation="nearest")
        ax.set_title(f"{view.group_names[g]}: {counts[view.group_names[g]]} of {n} kept", fontsize=10)
        ax.set_axis_off()
    flow_side = max(32, round(width * (1 - _COLORBAR_FRACTION) / steps))
    for g in range(groups):
        row = rows[1 + g]
        maps_right = 1 - _COLORBAR_FRACTION
        row.subplots_adjust(left=0.005, right=maps_right, bottom=0.005, top=1 - _TITLE_PX / flow, wspace=0.02)
        _flow_colorbar(row, left=maps_right + 0.006, top=1 - _TITLE_PX / flow)
        faint = None
        for t, ax in enumerate(row.subplots(1, steps, squeeze=False)[0]):
            last = t == steps - 1
            values = view.score_rank_map(g, flow_side) if last else view.flow_map(g, t, flow_side)
            if faint is None:
                grey = resize_photo(view.photo, values.shape).mean(axis=-1)
                faint = np.repeat((grey * 0.35)[..., None], 3, axis=-1).astype(np.uint8)
            ax.imshow(faint, interpolation="nearest")
            vmax = float(np.nanmax(values)) if np.isfinite(values).any() else 1.0
            ax.imshow(values, cmap=CMAP, vmin=0.0, vmax=vmax or 1.0, interpolation="nearest")
            rank_title = RANK_TITLE if flow_side >= 180 else "score rank"  # narrow panels: the short title
            label = rank_title if last else ("t = 0 (||x||)" if t == 0 else f"t = {t}")
            title = f"{view.group_names[g]}: {label}"
            ax.set_title(title, fontsize=9 if flow_side >= 150 else 7)
            ax.set_axis_off()
    return fig


def _overlay_legend(header: Any) -> Any:
    """What the overlay row's two looks mean, in the header's right corner (the title is on the left)."""
    from matplotlib.patches import Patch

    swatch = legend_swatches()
    handles = [
        Patch(facecolor=swatch["kept"]["face"], edgecolor=swatch["kept"]["edge"], linewidth=2, label=KEPT_LABEL),
        Patch(facecolor=swatch["pruned"]["face"], edgecolor=swatch["pruned"]["edge"], label=PRUNED_LABEL),
    ]
    return header.legend(handles=handles, loc="upper right", fontsize=8, frameon=False, borderaxespad=0.2)


def _flow_colorbar(row: Any, *, left: float, top: float) -> Any:
    """A colour bar for one flow row: every map is drawn from 0 (dark) to its own maximum (bright)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    cax = row.add_axes((left, 0.06, 0.008, max(0.1, top - 0.1)))
    bar = row.colorbar(ScalarMappable(norm=Normalize(0.0, 1.0), cmap=CMAP), cax=cax, ticks=[0.0, 1.0])
    bar.ax.set_yticklabels(["0", "max"], fontsize=7)
    bar.set_label(FLOW_LABEL, fontsize=7)
    return bar


def save_figure(
    view: PruningView, path: str | Path, *, width_px: int = DEFAULT_WIDTH_PX, dpi: int = DEFAULT_DPI
) -> Path:
    """Write the figure as an image (format from the suffix, PNG recommended); returns the path."""
    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"output folder does not exist: {path.parent}")
    fig = plot_pruning(view, width_px=width_px, dpi=dpi)
    fig.savefig(path, dpi=dpi)
    return path
