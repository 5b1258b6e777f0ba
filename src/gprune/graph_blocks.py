"""G-Prune scoring in bounded memory, for groups too large for the dense N x N buffers (videos, huge images).

The dense path (`gprune.core`) holds two fp32 N x N matrices and a boolean one: about 9 N^2 bytes, 2.3 GiB
at N = 16,384 and 9 GiB at 32,768. Here the graph is built a block of rows at a time and never held dense:

- The transition matrix is ``P = diag(1/Z) E`` with ``E_ij = exp((S_ij - 1) / tau)`` on edges, 0 elsewhere,
  and ``Z_i`` the row sums: the row softmax of the released code, shifted by the diagonal's ``1/tau``
  instead of the row maximum (equal up to rounding; the diagonal is the maximum but for rounding).
- E is symmetric, so only its upper triangle is built: the block of rows I is multiplied with columns
  from I's first row on (the tiles on and right of the diagonal), half the similarity product's work, and
  its edges strictly above the diagonal are kept (the threshold s makes E sparse: at s = 0.5 most pairs
  of tokens are not edges). The self-loops have weight ``exp(0) = 1``.
- A propagation step ``v P = (v / Z) E`` is then ``y + U y + U^T y`` for ``y = v / Z`` and U the strict
  upper triangle: a CSR product for ``U y`` and a scatter-add of each edge's ``E_ij y_i`` for ``U^T y``.
- Tiles are cached as CSR (int32 columns: 8 bytes an upper edge, 4 bytes an edge of the graph) or, when
  more than half of a tile's entries are edges, dense fp32 (4 bytes an entry) -- whichever is smaller --
  while the cache stays under its share of the budget. Tiles that do not fit are recomputed from the
  features at every step: the result is the same, the time grows by their share of the product per step.

Peak extra memory is then the block workspace (a fixed share of the budget) and the cache (the rest),
plus O(N) vectors: within the budget, but for a floor of `MIN_BLOCK_ROWS` rows per block. No normalised
copy of the features is made (the dense path holds one). The scores equal the dense path's up to fp32
rounding and keep the same tokens (tests/test_graph_blocks.py checks both against the dense computation).

`gprune.core` switches to this path when the dense buffers would exceed `MEMORY_BUDGET_BYTES`
(`bounded_scoring_needed`); small groups -- every image of the supported models at default settings --
take the dense path unchanged.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import Tensor

MEMORY_BUDGET_BYTES = 512 * 2**20
"""Peak extra memory one group's scoring may use. Groups whose dense buffers (`dense_peak_bytes`) fit in it
are scored densely; larger ones are scored here within it. Module-level so a user can raise or lower it."""

DENSE_BYTES_PER_PAIR = 9
"""The dense path's buffers per token pair: fp32 similarity, fp32 transition, one bool mask."""

WORKSPACE_SHARE = 0.25
"""Share of the budget for one block's workspace; the rest caches the graph's edges. Taller blocks make the
similarity product a little faster (each block re-reads the N vectors), but every tile the cache cannot
hold is recomputed at each of the T steps: at N = 32,768, D = 3584 and 512 MiB, a share of 0.5 left a
third of the tiles uncached and took 2x the time of 0.25, which caches them all (benchmarks/RESULTS.md)."""

WORKSPACE_BYTES_PER_ENTRY = 16
"""Workspace per entry of a row block in the worst case: fp32 similarity and bool edge mask, then for a
block cached sparse (at most half its entries edges) int64 flat indices, int32 columns, fp32 values."""

MIN_BLOCK_ROWS, MAX_BLOCK_ROWS = 8, 1024


def dense_peak_bytes(n: int) -> int:
    """Approximate peak extra bytes of the dense path for one group of `n` tokens."""
    return DENSE_BYTES_PER_PAIR * n * n


_FORCED = False


def bounded_scoring_needed(n: int, budget: int | None = None) -> bool:
    """Whether a group of `n` tokens is scored here: its dense buffers exceed the budget (or `bounded_scoring`)."""
    return _FORCED or dense_peak_bytes(n) > (MEMORY_BUDGET_BYTES if budget is None else budget)


@contextmanager
def bounded_scoring(memory_budget: int | None = None) -> Iterator[None]:
    """Score every group in blocks within the block, with `memory_budget` bytes if given.

    For benchmarks, tests, and callers who want a hard bound for groups of any size. Sets module state:
    not for concurrent threads that expect the default.
    """
    global _FORCED, MEMORY_BUDGET_BYTES
    budget = None if memory_budget is None else _checked_budget(memory_budget)  # before any state changes
    saved = _FORCED, MEMORY_BUDGET_BYTES
    _FORCED = True
    if budget is not None:
        MEMORY_BUDGET_BYTES = budget
    try:
        yield
    finally:
        _FORCED, MEMORY_BUDGET_BYTES = saved


def _checked_budget(memory_budget: int) -> int:
    if memory_budget < 1:
        raise ValueError(f"memory_budget must be a positive number of bytes, got {memory_budget!r}")
    return int(memory_budget)


def block_rows(n: int, budget: int, dim: int = 0) -> int:
    """Rows per block of tiles `n` wide so that one block's worst-case workspace stays within its share of
    `budget`: `WORKSPACE_BYTES_PER_ENTRY` per tile entry, plus the block's scaled fp32 features (`dim` wide)."""
    rows = int(budget * WORKSPACE_SHARE) // (WORKSPACE_BYTES_PER_ENTRY * max(n, 1) + 4 * dim)
    return max(MIN_BLOCK_ROWS, min(MAX_BLOCK_ROWS, rows, n))


class _Rows:
    """Builds tiles of E (edge weights) for one group, from its features and norms.

    A block of rows start:stop is multiplied with columns start:n only -- the tiles on and right of the
    diagonal -- since S is symmetric: entries left of it are the transposes of earlier blocks' tiles. A
    tile keeps only the edges strictly above the diagonal (``j > i``); the diagonal is every node's
    self-loop, weight ``exp(0) = 1``, added by `_TiledGraph.apply`. Each similarity is one dot product used for
    both directions, so the graph is exactly symmetric.

    No normalised copy of the features is held (N x D fp32: 235 MiB at N = 16,384, D = 3584): a tile's
    similarities are ``(x_I / |x_I|) @ x^T`` scaled by ``1 / |x_j|`` column-wise, which differs from the
    dense path's ``unit_I @ unit^T`` by rounding only. Zero vectors get similarity 0, as normalised there.
    """

    def __init__(self, x: Tensor, norms: Tensor, node: Tensor, threshold: float, temperature: float) -> None:
        self.x, self.inv_norm = x, 1.0 / norms.clamp_min(1e-12)  # the eps of torch.nn.functional.normalize
        self.node, self.threshold, self.inv_tau = node, threshold, 1.0 / temperature
        self.all_nodes = bool(node.all())

    def tile(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """(S, edge mask) of rows start:stop against columns start:n; edges only where column > row."""
        sim = (self.x[start:stop] * self.inv_norm[start:stop, None]) @ self.x[start:].mT
        sim.mul_(self.inv_norm[start:])
        edge = sim >= self.threshold
        if not self.all_nodes:  # zero vectors and masked tokens join no edge but their self-loop
            edge &= self.node[start:stop, None] & self.node[None, start:]
        height = stop - start
        edge[:, :height] &= torch.ones(height, height, dtype=torch.bool, device=sim.device).triu_(1)
        return sim, edge

    def weights(self, sim: Tensor, edge: Tensor) -> Tensor:
        """Dense E tile: ``exp((S - 1) / tau)`` on edges, exactly 0 elsewhere (computed in place on `sim`)."""
        return sim.sub_(1.0).mul_(self.inv_tau).exp_().masked_fill_(~edge, 0.0)

    def edge_weights(self, sim: Tensor, edge: Tensor, start: int) -> tuple[Tensor, Tensor]:
        """The edges of `weights` only, row by row: (int32 global columns, fp32 values), the same numbers."""
        flat = edge.view(-1).nonzero().squeeze(1)  # row-major
        values = sim.view(-1).index_select(0, flat).sub_(1.0).mul_(self.inv_tau).exp_()
        return flat.remainder_(sim.shape[1]).add_(start).to(torch.int32), values  # in place: no int64 copies


class _EdgeCache:
    """Tiles of E kept between propagation steps, within `capacity` bytes.

    Sparse tiles go into one CSR matrix (int32 columns, 8 bytes an edge above the diagonal: 4 bytes an
    edge of the graph) written into buffers allocated once at full capacity (untouched pages cost no
    memory), so the upper product is one sparse product -- torch's CSR product has a fixed cost of
    several ms a call, too much to pay per block. Tiles with more than half their entries edges are kept
    dense (4 bytes an entry), which is smaller.
    """

    def __init__(self, n: int, capacity: int, device: torch.device) -> None:
        self.n, self.left = n, capacity
        self.columns = torch.empty(capacity // 8, dtype=torch.int32, device=device)
        self.values = torch.empty(capacity // 8, dtype=torch.float32, device=device)
        self.used = 0
        self.sparse_blocks: list[_SparseBlock] = []
        self.dense: dict[tuple[int, int], Tensor] = {}

    def add(self, rows: _Rows, start: int, stop: int, sim: Tensor, edge: Tensor, counts: Tensor) -> bool:
        """Cache tile start:stop (edges per row `counts`; consumes `sim`) if it fits; False: recompute it."""
        edges, entries = int(counts.sum()), sim.numel()
        if 2 * edges > entries:
            if 4 * entries > self.left:
                return False
            self.dense[(start, stop)] = rows.weights(sim, edge)
            self.left -= 4 * entries
            return True
        if 8 * edges + 4 * (stop - start) > self.left or self.used + edges > self.values.numel():
            return False
        columns, values = rows.edge_weights(sim, edge, start)
        self.columns[self.used : self.used + edges] = columns
        self.values[self.used : self.used + edges] = values
        self.sparse_blocks.append(_SparseBlock(start, stop, self.used, self.used + edges, counts))
        self.used += edges
        self.left -= 8 * edges + 4 * (stop - start)
        return True

    def finish(self) -> _SparseUpper | None:
        """The sparse tiles as one CSR matrix (see `_SparseUpper`), or None when no tile is sparse."""
        if not self.sparse_blocks:
            return None
        counts = torch.cat([block.counts for block in self.sparse_blocks])
        crow = torch.cat([counts.new_zeros(1), counts.cumsum(0, dtype=torch.int32)])
        with warnings.catch_warnings():  # torch calls its sparse CSR support beta; we use construction and @ only
            warnings.simplefilter("ignore", UserWarning)
            csr = torch.sparse_csr_tensor(
                crow,
                self.columns[: self.used],
                self.values[: self.used],
                (counts.numel(), self.n),
                check_invariants=False,
            )
        rows = torch.cat([torch.arange(b.start, b.stop, device=counts.device) for b in self.sparse_blocks])
        return _SparseUpper(csr, rows, self.columns, self.values, self.sparse_blocks)


class _SparseBlock(NamedTuple):
    """One cached sparse tile: rows start:stop, their edges at first:last of the cache, `counts` per row."""

    start: int
    stop: int
    first: int
    last: int
    counts: Tensor


class _SparseUpper(NamedTuple):
    """The cached sparse tiles: `csr` holds rows `rows` of the upper triangle, tile by tile (`blocks`)."""

    csr: Tensor
    rows: Tensor
    columns: Tensor
    values: Tensor
    blocks: list[_SparseBlock]

    def add_product(self, y: Tensor, out: Tensor) -> None:
        """``out += (U + U^T) y`` for these tiles U: U y by the CSR product, U^T y by scatter-adding each
        edge's ``E_ij y_i`` into ``out_j``, tile by tile (so its buffers stay within a block's workspace).
        """
        out[self.rows] += self.csr @ y
        for start, stop, first, last, counts in self.blocks:
            sources = torch.repeat_interleave(y[start:stop], counts, output_size=last - first)
            out.index_add_(0, self.columns[first:last], sources.mul_(self.values[first:last]))


class _TiledGraph:
    """E of one group, as cached tiles and tiles to recompute: applies ``E y`` (E symmetric, diagonal 1)."""

    def __init__(
        self,
        rows: _Rows,
        sparse: _SparseUpper | None,
        dense: dict[tuple[int, int], Tensor],
        recompute: list[tuple[int, int]],
    ) -> None:
        self.rows, self.sparse, self.dense, self.recompute = rows, sparse, dense, recompute

    def apply(self, y: Tensor, *, recompute: bool = True) -> Tensor:
        """``E y``; with ``recompute=False`` the tiles that were not cached are left out."""
        out = y.clone()  # the self-loops: E_ii = exp((1 - 1) / tau) = 1
        if self.sparse is not None:
            self.sparse.add_product(y, out)
        tiles: list[tuple[tuple[int, int], Tensor | None]] = list(self.dense.items())
        if recompute:
            tiles = [*tiles, *((b, None) for b in self.recompute)]
        for (start, stop), tile in tiles:
            if tile is None:
                tile = self.rows.weights(*self.rows.tile(start, stop))
            out[start:stop] += tile @ y[start:]
            out[start:] += tile.mT @ y[start:stop]
        return out


def propagate_bounded(
    x: Tensor,
    info: Tensor,
    valid: Tensor,
    similarity_threshold: float,
    temperature: float,
    iterations: int,
    keep_all_steps: bool,
    *,
    memory_budget: int | None = None,
) -> tuple[list[Tensor], Tensor]:
    """Propagate information on each item's graph within `memory_budget` bytes (default `MEMORY_BUDGET_BYTES`).

    Same contract as `gprune.core._propagate_chunk`: `x` (B, N, D) fp32 with masked rows zeroed, `info`
    (B, N) the initial information, `valid` (B, N); returns the information per step ((B, N) each; all
    T + 1 steps with `keep_all_steps`, else the last) and the degree (B, N) int32, self-loop included.
    """
    budget = _checked_budget(MEMORY_BUDGET_BYTES if memory_budget is None else memory_budget)
    items = [
        _propagate_one(x[b], info[b], valid[b], similarity_threshold, temperature, iterations, keep_all_steps, budget)
        for b in range(x.shape[0])
    ]
    steps = [torch.stack(step) for step in zip(*(item[0] for item in items), strict=True)]
    return steps, torch.stack([item[1] for item in items])


def _propagate_one(
    x: Tensor,
    info: Tensor,
    valid: Tensor,
    threshold: float,
    temperature: float,
    iterations: int,
    keep_all_steps: bool,
    budget: int,
) -> tuple[list[Tensor], Tensor]:
    n = x.shape[0]
    rows = _Rows(x, info, valid & (info > 0), threshold, temperature)
    cache = _EdgeCache(n, budget - int(budget * WORKSPACE_SHARE), x.device)
    recompute: list[tuple[int, int]] = []
    degree = torch.ones(n, dtype=torch.int32, device=x.device)  # the self-loop
    norm = torch.zeros(n, dtype=torch.float32, device=x.device)  # Z_i of the tiles not cached

    start = 0
    while start < n:
        stop = min(n, start + block_rows(n - start, budget, x.shape[1]))  # narrower tiles further down: taller
        sim, edge = rows.tile(start, stop)
        # edges per row and per column; summed in slices so the int32 cast stays cache-sized (as core does)
        counts = torch.cat([part.sum(dim=1, dtype=torch.int32) for part in edge.split(256)])
        degree[start:stop] += counts
        for part in edge.split(256):  # column counts in row slices too: no int32 copy of the whole tile
            degree[start:] += part.sum(dim=0, dtype=torch.int32)
        if not cache.add(rows, start, stop, sim, edge, counts):
            recompute.append((start, stop))
            tile = rows.weights(sim, edge)
            norm[start:stop] += tile.sum(dim=1)
            norm[start:] += tile.sum(dim=0)
        del sim, edge
        start = stop
    graph = _TiledGraph(rows, cache.finish(), cache.dense, recompute)
    norm += graph.apply(torch.ones(n, device=x.device), recompute=False)  # Z = E 1, the softmax denominators

    v = info
    steps = [info]
    for _ in range(iterations):
        v = graph.apply(v / norm)  # v P = (v / Z) E, and E is symmetric
        steps = [*steps, v] if keep_all_steps else [v]
    return steps, degree
