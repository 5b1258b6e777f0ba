"""How one image's visual tokens split into groups that are scored separately, and the kept counts.

A `TokenLayout` is all the selection needs to know about a model's packing: the groups (each scored as
its own graph with the same keep setting) and the tokens that are always kept (LLaVA-NeXT's newlines).
Model adapters build layouts; nothing here knows about model classes.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from gprune.methods import Grouping, get_grouping, get_method
from gprune.validation import Keep, check_features, check_keep


@dataclass(frozen=True)
class TokenLayout:
    """Packed visual tokens of one image: `length` rows, split into `groups` plus `always_keep`.

    Every index in ``range(length)`` is in exactly one group or in `always_keep`.
    """

    length: int
    groups: tuple[Tensor, ...]
    always_keep: Tensor
    group_shapes: tuple[tuple[int, ...], ...] | None = None
    """Each group's size as the factors the released code multiplies a keep ratio by, left to right
    (LLaVA-NeXT's grid: ``(rows, cols)``, counted ``int(ratio * rows * cols)``); None: each size alone."""

    def __post_init__(self) -> None:
        seen = torch.cat([*self.groups, self.always_keep]) if self.groups else self.always_keep
        if seen.numel() != self.length or not torch.equal(torch.sort(seen).values, torch.arange(self.length)):
            raise ValueError(f"layout groups and always-kept tokens must partition range({self.length})")
        if any(g.numel() == 0 for g in self.groups):
            raise ValueError("layout has an empty group")
        if self.group_shapes is not None and (
            len(self.group_shapes) != len(self.groups)
            or any(math.prod(s) != g.numel() for s, g in zip(self.group_shapes, self.groups, strict=False))
        ):
            sizes = [int(g.numel()) for g in self.groups]
            raise ValueError(f"group_shapes {self.group_shapes} do not multiply to the group sizes {sizes}")

    def shapes(self) -> tuple[tuple[int, ...], ...]:
        """`group_shapes`, or each group's size as a 1-tuple."""
        return self.group_shapes or tuple((int(g.numel()),) for g in self.groups)


def single_group_layout(length: int) -> TokenLayout:
    """One graph over all tokens (LLaVA-1.5, Qwen-VL images)."""
    if length < 1:
        raise ValueError(f"a layout needs at least one token, got length {length}")
    return TokenLayout(length, (torch.arange(length),), torch.empty(0, dtype=torch.long))


def _check_token_counts(**values: object) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")


def llava_next_layout(base_tokens: int, grid_rows: int, grid_cols: int) -> TokenLayout:
    """LLaVA-NeXT packing: base view, then `grid_rows` rows of `grid_cols` tokens each ending in a newline.

    ``grid_rows == grid_cols == 0`` is the single-tile case: the base view followed by one newline.
    Base and grid are separate groups; every newline is always kept (as the released code does).
    """
    _check_token_counts(base_tokens=base_tokens, grid_rows=grid_rows, grid_cols=grid_cols)
    if base_tokens < 1:
        raise ValueError(f"base_tokens must be >= 1, got {base_tokens}")
    if (grid_rows == 0) != (grid_cols == 0):
        raise ValueError(
            f"grid_rows and grid_cols must both be 0 (single tile) or both >= 1, got {grid_rows}x{grid_cols}"
        )
    base = torch.arange(base_tokens)
    if grid_rows == 0:
        return TokenLayout(base_tokens + 1, (base,), torch.tensor([base_tokens]))
    cells = torch.arange(grid_rows * (grid_cols + 1)).view(grid_rows, grid_cols + 1) + base_tokens
    grid = cells[:, :grid_cols].reshape(-1)
    newlines = cells[:, grid_cols]
    shapes = ((base_tokens,), (grid_rows, grid_cols))  # the released count: int(ratio * row_num * col_num)
    return TokenLayout(base_tokens + grid_rows * (grid_cols + 1), (base, grid), newlines, shapes)


def tiled_layout(tokens_per_view: int, tiles: int) -> TokenLayout:
    """Tiles followed by one global view (Idefics3 / SmolVLM, InternVL), each view `tokens_per_view` tokens.

    The tiles together are one graph and the global view another (as LLaVA-NeXT's grid and base view);
    ``tiles == 0`` is an image seen as the global view alone: one graph.
    """
    _check_token_counts(tokens_per_view=tokens_per_view, tiles=tiles)
    if tokens_per_view < 1:
        raise ValueError(f"tokens_per_view must be >= 1, got {tokens_per_view}")
    if tiles == 0:
        return single_group_layout(tokens_per_view)
    split = tiles * tokens_per_view
    groups = (torch.arange(split), torch.arange(split, split + tokens_per_view))
    return TokenLayout(split + tokens_per_view, groups, torch.empty(0, dtype=torch.long))


def ratio_count(ratio: float, shape: Sequence[int], *, rounding: str = "floor") -> int:
    """Tokens a ratio keeps of a group of ``prod(shape)``: ``int(ratio * shape[0] * shape[1] ...)``, at least 1.

    The product is evaluated left to right, as the released code writes it (``int(keep_ratio * row_num *
    col_num)`` differs from ``int(keep_ratio * (row_num * col_num))`` in about 1-2% of grids).
    ``rounding="round"`` gives ``int(round(...))`` (DivPrune's released count).
    """
    value = ratio
    for factor in shape:
        value *= factor
    return max(1, int(round(value)) if rounding == "round" else int(value))


def group_keep_counts(layout: TokenLayout, keep: Keep, *, rounding: str = "floor") -> list[int]:
    """Tokens kept in each group.

    A ratio applies to every group alike (`ratio_count`: ``int(ratio * rows * cols)`` in the released
    order, at least 1). A count is a budget for the whole image, always-kept tokens included: what remains
    after them is split across groups in proportion to their sizes (largest remainder), at least one per
    group.
    """
    keep = check_keep(keep)
    sizes = [int(g.numel()) for g in layout.groups]
    if isinstance(keep, float):
        return [ratio_count(keep, shape, rounding=rounding) for shape in layout.shapes()]
    budget = min(keep, layout.length) - int(layout.always_keep.numel())
    if budget < len(sizes):
        raise ValueError(
            f"keep = {keep} tokens is too few for this image: {layout.always_keep.numel()} tokens are always "
            f"kept and each of its {len(sizes)} group(s) keeps at least one"
        )
    total = sum(sizes)
    exact = [budget * n / total for n in sizes]
    counts = [max(1, int(e)) for e in exact]
    by_remainder = sorted(range(len(sizes)), key=lambda i: (counts[i] - exact[i], i))
    i = 0
    while sum(counts) < budget:
        j = by_remainder[i % len(sizes)]
        if counts[j] < sizes[j]:
            counts[j] += 1
        i += 1
    while sum(counts) > budget:  # only when the at-least-one floor overshoots
        j = max(range(len(sizes)), key=lambda g: counts[g])
        counts[j] -= 1
    return counts


def method_layout(layout: TokenLayout, grouping: Grouping) -> TokenLayout:
    """The layout a method's grouping scores: `layout` itself, or one group over the whole packed image."""
    return single_group_layout(layout.length) if grouping.whole_image else layout


def kept_token_count(layout: TokenLayout, keep: Keep, *, method: str = "gprune") -> int:
    """Visual tokens one image keeps under `keep` and `method`: a pure function of layout, keep and method."""
    grouping = get_grouping(method)
    scored = method_layout(layout, grouping)
    return sum(group_keep_counts(scored, keep, rounding=grouping.rounding)) + int(scored.always_keep.numel())


def select_groups(
    groups: Sequence[Tensor], counts: Sequence[int], *, method: str = "gprune", **params: Any
) -> list[Tensor]:
    """Run `method` on many independent token groups (each (n_g, D)), batching groups of equal size.

    Returns, per group, the kept indices (ascending) into that group.
    """
    if len(groups) != len(counts):
        raise ValueError(f"got {len(groups)} groups but {len(counts)} keep counts")
    selector = get_method(method)
    buckets: dict[tuple[int, int, torch.device], list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        if g.dim() != 2:
            raise ValueError(f"group {i} must have shape (n, D), got {tuple(g.shape)}")
        buckets[(g.shape[0], g.shape[1], g.device)].append(i)
    result: list[Tensor | None] = [None] * len(groups)
    for members in buckets.values():
        x, mask, _ = check_features(torch.stack([groups[i] for i in members]))
        kept = selector(x, mask, [counts[i] for i in members], **params)
        for i, idx in zip(members, kept, strict=True):
            result[i] = idx
    return [r for r in result if r is not None]


def select_in_layouts(
    features: Sequence[Tensor], layouts: Sequence[TokenLayout], keep: Keep, *, method: str = "gprune", **params: Any
) -> list[Tensor]:
    """Kept indices (ascending, on the CPU) into each image's packed features under its layout.

    The groups of all images are selected in one `select_groups` call, so groups of equal size from
    different images are scored together; every image's always-kept tokens are added. A method registered
    with whole-image grouping (e.g. "divprune-released") scores each packed image as one group instead.
    """
    if len(features) != len(layouts):
        raise ValueError(f"got {len(features)} feature tensors but {len(layouts)} layouts")
    grouping = get_grouping(method)
    layouts = [method_layout(layout, grouping) for layout in layouts]
    groups: list[Tensor] = []
    counts: list[int] = []
    for f, layout in zip(features, layouts, strict=True):
        if f.dim() != 2 or f.shape[0] != layout.length:
            raise ValueError(f"packed features have shape {tuple(f.shape)} but the layout expects ({layout.length}, D)")
        groups.extend(f[g.to(f.device)] for g in layout.groups)
        counts.extend(group_keep_counts(layout, keep, rounding=grouping.rounding))
    chosen = select_groups(groups, counts, method=method, **params) if groups else []
    kept, i = [], 0
    for layout in layouts:
        n = len(layout.groups)
        parts = [g[c.cpu()] for g, c in zip(layout.groups, chosen[i : i + n], strict=True)]
        i += n
        kept.append(torch.sort(torch.cat([*parts, layout.always_keep])).values)
    return kept


def select_in_layout(
    features: Tensor, layout: TokenLayout, keep: Keep, *, method: str = "gprune", **params: Any
) -> Tensor:
    """Kept indices (ascending, on the features' device) into one image's packed features under `layout`."""
    return select_in_layouts([features], [layout], keep, method=method, **params)[0].to(features.device)


def select_llava_next(
    features: Tensor, *, base_tokens: int, grid_rows: int, grid_cols: int, keep: Keep, **scoring_kwargs: Any
) -> Tensor:
    """G-Prune on one image's packed LLaVA-NeXT features, grouped as the released code does.

    Base view and high-res grid (newlines excluded) are separate graphs with the same `keep`; every
    newline is kept. ``grid_rows == grid_cols == 0`` is the single tile: base view plus one newline.
    Returns ascending indices into the packed layout.
    """
    layout = llava_next_layout(base_tokens, grid_rows, grid_cols)
    if features.dim() != 2 or features.shape[0] != layout.length:
        shape = tuple(features.shape)
        raise ValueError(
            f"packed LLaVA-NeXT features have shape {shape}, but base_tokens={base_tokens} with a "
            f"{grid_rows}x{grid_cols} grid packs {layout.length} rows "
            f"(base + rows*(cols+1){' ; single tile: base + 1 newline' if grid_rows == 0 else ''})"
        )
    return select_in_layout(features, layout, keep, method="gprune", **scoring_kwargs)
