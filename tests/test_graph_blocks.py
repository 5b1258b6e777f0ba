"""Bounded-memory scoring (`gprune.graph_blocks`) against the dense computation of `gprune.core`.

The dense path is the independent formulation: one N x N similarity, a row softmax over the edges, T
vector-matrix products. The bounded path builds rows of E = exp((S - 1) / tau) on edges block by block,
caches them as CSR or dense blocks within a budget and recomputes the rest; it must keep the same tokens.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import gprune
from gprune import graph_blocks
from gprune.core import top_indices
from reference_gprune import clustered_features

# budgets for N = 1000: everything cached, part cached and part recomputed, nothing cached
BUDGETS = {"cached": 10**8, "mixed": 100_000, "recomputed": 1}


def _dense(features: torch.Tensor, **kwargs: object) -> torch.Tensor:
    assert not graph_blocks.bounded_scoring_needed(features.shape[-2])
    return gprune.graph_scores(features, **kwargs)


def _bounded(features: torch.Tensor, budget: int, **kwargs: object) -> torch.Tensor:
    with graph_blocks.bounded_scoring(budget):
        return gprune.graph_scores(features, **kwargs)


def _same_kept(a: torch.Tensor, b: torch.Tensor, ratios: tuple[float, ...] = (0.5, 0.25, 0.1)) -> None:
    n = int(torch.isfinite(a).sum())
    for ratio in ratios:
        assert torch.equal(top_indices(a, int(ratio * n)), top_indices(b, int(ratio * n))), ratio


@pytest.mark.parametrize("budget", list(BUDGETS), ids=list(BUDGETS))
@pytest.mark.parametrize("threshold", [0.5, 0.7])
def test_same_scores_and_kept_set_as_dense(budget: str, threshold: float) -> None:
    x = clustered_features(1000, 48, seed=2)
    dense = _dense(x, similarity_threshold=threshold)
    bounded = _bounded(x, BUDGETS[budget], similarity_threshold=threshold)
    torch.testing.assert_close(bounded, dense, rtol=2e-5, atol=0)
    _same_kept(bounded, dense)


def test_budgets_cover_every_caching_regime(monkeypatch: pytest.MonkeyPatch) -> None:
    """The budgets above really give all tiles cached, some cached and some recomputed, and none cached."""
    regimes: list[tuple[bool, int]] = []
    real = graph_blocks._TiledGraph.__init__

    def spy(self: object, rows: object, sparse: object, dense: dict, recompute: list) -> None:
        regimes.append((sparse is not None or bool(dense), len(recompute)))
        real(self, rows, sparse, dense, recompute)

    monkeypatch.setattr(graph_blocks._TiledGraph, "__init__", spy)
    x = clustered_features(1000, 48, seed=2)
    for name, budget in BUDGETS.items():
        for threshold in (0.5, 0.7):
            regimes.clear()
            _bounded(x, budget, similarity_threshold=threshold)
            ((cached, recomputed),) = regimes
            expected = {"cached": (True, False), "mixed": (True, True), "recomputed": (False, True)}[name]
            assert (cached, recomputed > 0) == expected, (name, threshold)


def test_dense_blocks_when_most_pairs_are_edges() -> None:
    """One tight cluster: every tile has more edges than not and is cached dense, not as CSR."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 32, generator=g) + 0.3 * torch.randn(700, 32, generator=g)
    cache = graph_blocks._EdgeCache(700, 10**8, torch.device("cpu"))
    rows = graph_blocks._Rows(x, x.norm(dim=-1), torch.ones(700, dtype=torch.bool), 0.5, 0.03)
    sim, edge = rows.tile(0, 100)  # rows 0:100 against columns 0:700, edges above the diagonal
    assert cache.add(rows, 0, 100, sim, edge, edge.sum(dim=1, dtype=torch.int32))
    assert list(cache.dense) == [(0, 100)] and cache.finish() is None
    _same_kept(_bounded(x, 10**8), _dense(x))
    torch.testing.assert_close(_bounded(x, 300_000), _dense(x), rtol=2e-5, atol=0)


def test_information_flow_equals_dense() -> None:
    x = clustered_features(600, 32, seed=4)
    dense = gprune.information_flow(x)
    with graph_blocks.bounded_scoring(BUDGETS["mixed"]):
        bounded = gprune.information_flow(x)
    assert bounded.shape == dense.shape == (6, 600)
    torch.testing.assert_close(bounded, dense, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("threshold", [0.5, -0.5])
def test_masks_zero_vectors_and_batches_equal_dense(threshold: float) -> None:
    """Masked tokens score -inf, zero vectors are isolated (even when s <= 0 would link them), batches agree."""
    x = torch.stack([clustered_features(500, 24, seed=s) for s in range(3)])
    x[0, 10] = 0.0
    x[1, 100:110] = 0.0
    mask = torch.ones(3, 500, dtype=torch.bool)
    mask[2, 400:] = False
    x[2, 450] = float("nan")  # masked rows may hold anything
    dense = _dense(x, mask=mask, similarity_threshold=threshold)
    bounded = _bounded(x, BUDGETS["mixed"], mask=mask, similarity_threshold=threshold)
    assert torch.equal(torch.isinf(bounded), ~mask) and torch.equal(torch.isinf(dense), ~mask)
    assert bounded[0, 10] == 0 and bool((bounded[1, 100:110] == 0).all())
    torch.testing.assert_close(bounded[mask], dense[mask], rtol=2e-5, atol=0)
    for b in range(3):
        _same_kept(bounded[b], dense[b])
        single = _bounded(x[b][mask[b]], BUDGETS["mixed"], similarity_threshold=threshold)
        torch.testing.assert_close(single, bounded[b][mask[b]], rtol=2e-5, atol=0)  # other tiles, other sums
        _same_kept(single, bounded[b][mask[b]])


def test_duplicates_keep_the_lower_indices_as_dense() -> None:
    x = clustered_features(400, 16, seed=5)
    x[200:260] = x[20]  # 61 copies of one token, one tie
    x[300:310] = 3 * x[30]  # same direction, larger norm
    _same_kept(_bounded(x, BUDGETS["mixed"]), _dense(x), ratios=(0.5, 0.2, 0.05, 0.01))


def test_switch_uses_the_dense_path_for_small_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not graph_blocks.bounded_scoring_needed(2880)  # LLaVA-NeXT's grid: dense, unchanged
    assert graph_blocks.bounded_scoring_needed(16384)
    assert graph_blocks.bounded_scoring_needed(100, budget=1000)
    calls: list[int] = []
    real = graph_blocks.propagate_bounded

    def spy(x: torch.Tensor, *args: object, **kwargs: object) -> object:
        calls.append(x.shape[1])
        return real(x, *args, **kwargs)

    monkeypatch.setattr(graph_blocks, "propagate_bounded", spy)
    x = clustered_features(300, 16, seed=6)
    dense = gprune.graph_scores(x)
    assert calls == []
    monkeypatch.setattr(graph_blocks, "MEMORY_BUDGET_BYTES", graph_blocks.dense_peak_bytes(300) - 1)
    assert torch.equal(top_indices(gprune.graph_scores(x), 150), top_indices(dense, 150))
    assert calls == [300]


def test_block_rows_respect_the_workspace_share() -> None:
    for n, budget, dim in [
        (16384, 512 * 2**20, 3584),
        (32768, 512 * 2**20, 3584),
        (1000, 400_000, 0),
        (600, 2**24, 4096),
    ]:
        rows = graph_blocks.block_rows(n, budget, dim)
        assert graph_blocks.MIN_BLOCK_ROWS <= rows <= graph_blocks.MAX_BLOCK_ROWS
        workspace = rows * (n * graph_blocks.WORKSPACE_BYTES_PER_ENTRY + 4 * dim)
        assert rows == graph_blocks.MIN_BLOCK_ROWS or workspace <= budget * graph_blocks.WORKSPACE_SHARE
    assert graph_blocks.block_rows(600, 2**24, 4096) < graph_blocks.block_rows(600, 2**24)  # wide features count
    with pytest.raises(ValueError, match="memory_budget"), graph_blocks.bounded_scoring(0):
        pass
    assert not graph_blocks.bounded_scoring_needed(100)  # the refused call left the switch as it was


MEASURE = """
import sys, torch
sys.path.insert(0, {tests!r})
from pathlib import Path
from reference_gprune import clustered_features
import gprune
from gprune import graph_blocks
torch.set_num_threads(1)
x = clustered_features(3000, 32, seed=0)
def rss(field):
    return next(int(l.split()[1]) * 1024 for l in Path("/proc/self/status").read_text().splitlines()
                if l.startswith(field + ":"))
with graph_blocks.bounded_scoring(2**20):  # warm-up: load the kernels and libraries both paths use
    gprune.graph_scores(x[:200])
gprune.graph_scores(x[:200])
before = rss("VmRSS")
Path("/proc/self/clear_refs").write_text("5")
if {bounded}:
    with graph_blocks.bounded_scoring(8 * 2**20):
        gprune.graph_scores(x)
else:
    gprune.graph_scores(x)
print(rss("VmHWM") - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS is read from /proc")
def test_peak_memory_stays_near_the_budget() -> None:
    """N = 3000: the dense path's N x N buffers take ~80 MB; the bounded path stays near its 8 MiB budget."""
    tests = os.path.dirname(__file__)

    def peak(bounded: bool) -> int:
        code = textwrap.dedent(MEASURE.format(tests=tests, bounded=bounded))
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        return int(done.stdout.strip().splitlines()[-1])

    dense, bounded = peak(False), peak(True)
    assert dense > 9 * 3000**2 * 0.8
    assert bounded < 16 * 2**20 and bounded < dense / 4


def test_similarity_product_only_above_the_diagonal() -> None:
    """E is symmetric: blocks multiply only the tiles on and right of the diagonal, about half of X·Xᵀ."""
    from torch.utils.flop_counter import FlopCounterMode

    n, d = 1000, 48
    x = clustered_features(n, d, seed=7)
    budget = 8_000_000  # blocks of 125+ rows (taller as the tiles narrow), every tile cached
    assert graph_blocks.block_rows(n, budget) == 125
    with FlopCounterMode(display=False) as counter, graph_blocks.bounded_scoring(budget):
        bounded = gprune.graph_scores(x)
    full = 2 * n * n * d  # one GEMM X·Xᵀ; the upper triangle with its diagonal blocks is a bit over half
    assert 0.5 * full < counter.get_total_flops() < 0.62 * full
    _same_kept(bounded, _dense(x))
