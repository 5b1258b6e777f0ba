"""Uniform spatial keep: the tokens on an even grid over the image, like strided pooling without merging.

A method only sees a group's tokens as a sequence, so it needs the group's 2-D shape. Rule, in order:
- `grid=(rows, cols)` given: the valid tokens of every item are that grid in raster order (rows * cols
  must equal the item's valid count, else a clear error). Use it for a single-group layout of known
  shape; it applies to every group of a call alike.
- otherwise, if the valid count n is a perfect square, the group is a sqrt(n) x sqrt(n) grid (ViT patch
  grids: LLaVA-1.5's 24 x 24, LLaVA-NeXT's base view);
- otherwise the tokens are evenly spaced along the raster order (a 1-D stride).

On a rows x cols grid, k tokens are kept as an r x c lattice of cell centres (r * c >= k, r / c close to
rows / cols); when r * c > k, k lattice points are taken evenly along the lattice's raster order. When k
is itself such a lattice (144 of 24 x 24: every second row and column) the result is an exact even grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from gprune.methods import register_method


def even_positions(n: int, k: int) -> Tensor:
    """`k` distinct positions in range(n), evenly spread: the centres of k equal cells."""
    return ((torch.arange(k, dtype=torch.float64) + 0.5) * (n / k)).floor().long()


def grid_lattice(rows: int, cols: int, k: int) -> Tensor:
    """Raster indices of `k` tokens on an even lattice over a rows x cols grid, ascending."""
    if not 1 <= k <= rows * cols:
        raise ValueError(f"cannot keep {k} tokens of a {rows}x{cols} grid")
    r = min(rows, max(1, round(math.sqrt(k * rows / cols))))
    c = min(cols, math.ceil(k / r))
    if r * c < k:
        r = math.ceil(k / c)
    lattice = (even_positions(rows, r).unsqueeze(1) * cols + even_positions(cols, c).unsqueeze(0)).reshape(-1)
    return lattice[even_positions(lattice.numel(), k)]


def _grid_shape(n: int, grid: Sequence[int] | None) -> tuple[int, int] | None:
    if grid is not None:
        if len(grid) != 2 or any(isinstance(g, bool) or not isinstance(g, int) or g < 1 for g in grid):
            raise ValueError(f"uniform pruning: grid must be (rows, cols) of positive ints, got {grid!r}")
        if grid[0] * grid[1] != n:
            raise ValueError(
                f"uniform pruning: grid {grid[0]}x{grid[1]} holds {grid[0] * grid[1]} tokens but the group has "
                f"{n} valid tokens; pass the group's own shape or leave grid unset"
            )
        return int(grid[0]), int(grid[1])
    side = math.isqrt(n)
    return (side, side) if side * side == n else None


@register_method("uniform")
def select_uniform(
    features: Tensor, mask: Tensor, counts: Sequence[int], *, grid: Sequence[int] | None = None
) -> list[Tensor]:
    """Keep `counts[b]` valid tokens of item b on an even spatial grid (see the module docstring)."""
    kept = []
    for row_mask, k in zip(mask, counts, strict=True):
        valid = row_mask.nonzero().squeeze(-1)
        n = valid.numel()
        shape = _grid_shape(n, grid)
        local = even_positions(n, k) if shape is None else grid_lattice(shape[0], shape[1], k)
        kept.append(valid[local.to(valid.device)])
    return kept
