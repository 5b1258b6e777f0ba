"""Baseline selectors: the contract every registered method keeps, and each baseline's defining property."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gprune import GPruneConfig, available_methods, get_method, kept_token_count, llava_next_layout, select_in_layout
from gprune.config import PAPER_SIMILARITY_THRESHOLD

BASELINES = {
    "random", "l2norm", "uniform", "divprune", "divprune-released", "dart", "dart-strongest-first", "gprune-paper"
}


def test_baselines_are_registered():
    assert BASELINES | {"gprune"} <= set(available_methods())


def _clustered(n_per: list[int], d: int = 16, spread: float = 0.05, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Tight clusters of very different sizes; returns features (N, D) and each token's cluster label."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(len(n_per), d, generator=g)
    labels = np.repeat(np.arange(len(n_per)), n_per)
    x = centres[torch.as_tensor(labels)] + spread * torch.randn(len(labels), d, generator=g)
    perm = torch.randperm(len(labels), generator=g)
    return x[perm], labels[perm.numpy()]


def _cosine(x: torch.Tensor) -> np.ndarray:
    u = x.double().numpy()
    u = u / np.linalg.norm(u, axis=1, keepdims=True)
    return u @ u.T


# ---------------------------------------------------------------- the contract, for every registered method


@st.composite
def batches(draw):
    b = draw(st.integers(1, 3))
    n = draw(st.integers(1, 40))
    d = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**31 - 1))
    rows = [draw(st.lists(st.booleans(), min_size=n, max_size=n)) for _ in range(b)]
    mask = torch.tensor(rows, dtype=torch.bool).reshape(b, n)
    for i in range(b):  # at least one valid token per item
        if not mask[i].any():
            mask[i, draw(st.integers(0, n - 1))] = True
    counts = [draw(st.integers(1, int(mask[i].sum()))) for i in range(b)]
    features = torch.randn(b, n, d, generator=torch.Generator().manual_seed(seed))
    features[~mask] = float("nan")  # padding content must never matter
    return features, mask, counts


@pytest.mark.parametrize("name", sorted(BASELINES | {"gprune"}))
@settings(max_examples=40, deadline=None)
@given(data=batches())
def test_every_method_keeps_the_selector_contract(name, data):
    features, mask, counts = data
    method = get_method(name)
    kept = method(features, mask, counts)
    assert len(kept) == len(counts)
    for b, (idx, k) in enumerate(zip(kept, counts, strict=True)):
        assert idx.dtype == torch.long and idx.dim() == 1
        assert idx.numel() == k  # exact count
        assert torch.all(idx[1:] > idx[:-1])  # unique and ascending
        assert int(idx.min()) >= 0 and int(idx.max()) < features.shape[1]  # in range
        assert bool(mask[b, idx].all())  # masked tokens are never kept
        # batched == per item, and padding-invariant: the item alone, without its padding, picks the same
        alone = method(features[b : b + 1], mask[b : b + 1], [k])[0]
        assert torch.equal(alone, idx)
        valid = mask[b].nonzero().squeeze(-1)
        stripped = method(features[b : b + 1, valid], torch.ones(1, valid.numel(), dtype=torch.bool), [k])[0]
        assert torch.equal(valid[stripped], idx)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_each_baseline_runs_through_config_and_layout(name):
    params = {"seed": 3} if name == "random" else {}
    config = GPruneConfig(keep=0.25, method=name, method_params=params)
    layout = llava_next_layout(16, 2, 3)  # 4x4 base view + a 2x3 grid with newlines
    features = torch.randn(layout.length, 8, generator=torch.Generator().manual_seed(1))
    kept = select_in_layout(features, layout, config.keep, method=config.method, **config.selector_params())
    if name == "divprune-released":  # the released grouping: one set over all 24 packed tokens
        assert kept.numel() == round(0.25 * 24) == kept_token_count(layout, 0.25, method=name)
        return
    assert kept.numel() == 4 + 1 + 2  # int(0.25*16) + max(1, int(0.25*6)) + two newlines
    assert set(layout.always_keep.tolist()) <= set(kept.tolist())


# ---------------------------------------------------------------- defining properties


def test_random_is_reproducible_per_seed_and_differs_across_seeds():
    x = torch.randn(1, 100, 4)
    mask = torch.ones(1, 100, dtype=torch.bool)
    select = get_method("random")
    runs = {seed: select(x, mask, [10], seed=seed)[0] for seed in range(5)}
    for seed, idx in runs.items():
        assert torch.equal(select(x, mask, [10], seed=seed)[0], idx)
    assert len({tuple(v.tolist()) for v in runs.values()}) == 5
    with pytest.raises(TypeError, match="seed"):
        select(x, mask, [10], seed=0.5)


def test_random_ignores_the_features():
    mask = torch.ones(1, 50, dtype=torch.bool)
    a = get_method("random")(torch.randn(1, 50, 4), mask, [7], seed=11)[0]
    b = get_method("random")(torch.randn(1, 50, 4) * 100, mask, [7], seed=11)[0]
    assert torch.equal(a, b)


def test_l2norm_keeps_the_largest_norms():
    x = torch.randn(2, 60, 5)
    mask = torch.ones(2, 60, dtype=torch.bool)
    for row, idx in zip(x, get_method("l2norm")(x, mask, [9, 20]), strict=True):
        norms = np.linalg.norm(row.double().numpy(), axis=1)
        expected = np.sort(np.argsort(-norms, kind="stable")[: idx.numel()])
        assert idx.tolist() == expected.tolist()


def _coords(idx: torch.Tensor, cols: int) -> tuple[list[int], list[int]]:
    return sorted({i // cols for i in idx.tolist()}), sorted({i % cols for i in idx.tolist()})


def test_uniform_keeps_an_even_grid_on_a_square_group():
    mask = torch.ones(1, 576, dtype=torch.bool)
    idx = get_method("uniform")(torch.zeros(1, 576, 3), mask, [144])[0]
    rows, cols = _coords(idx, 24)
    assert rows == cols == list(range(1, 24, 2))  # every second row and column, centred
    assert set(idx.tolist()) == {r * 24 + c for r, c in itertools.product(rows, cols)}


def test_uniform_uses_an_explicit_grid_and_checks_it():
    mask = torch.ones(1, 48, dtype=torch.bool)
    select = get_method("uniform")
    idx = select(torch.zeros(1, 48, 3), mask, [12], grid=(6, 8))[0]
    rows, cols = _coords(idx, 8)
    assert rows == [1, 3, 5] and cols == [1, 3, 5, 7]  # a 3x4 lattice with stride 2
    assert len(idx) == 12
    with pytest.raises(ValueError, match="grid 5x8 holds 40 tokens but the group has 48"):
        select(torch.zeros(1, 48, 3), mask, [12], grid=(5, 8))


def test_uniform_falls_back_to_an_even_stride_on_non_square_groups():
    mask = torch.ones(1, 30, dtype=torch.bool)
    idx = get_method("uniform")(torch.zeros(1, 30, 3), mask, [6])[0]
    assert idx.tolist() == [2, 7, 12, 17, 22, 27]  # centres of six cells of five tokens


def test_uniform_keeps_exact_counts_that_are_not_a_lattice():
    mask = torch.ones(1, 576, dtype=torch.bool)
    for k in (1, 7, 64, 100, 191, 575, 576):
        idx = get_method("uniform")(torch.zeros(1, 576, 3), mask, [k])[0]
        assert idx.numel() == k and torch.all(idx[1:] > idx[:-1])


def _min_pairwise_distance(x: torch.Tensor, idx: torch.Tensor) -> float:
    cos = _cosine(x[idx])
    np.fill_diagonal(cos, -np.inf)
    return float(1.0 - cos.max())


def test_divprune_keeps_a_larger_minimum_distance_than_random_on_clustered_data():
    x, labels = _clustered([120, 40, 20, 10, 5, 3], seed=0)
    mask = torch.ones(1, len(labels), dtype=torch.bool)
    div = get_method("divprune")(x[None], mask, [6])[0]
    assert sorted(labels[div.numpy()].tolist()) == [0, 1, 2, 3, 4, 5]  # one token per cluster, small ones too
    div_gap = _min_pairwise_distance(x, div)
    for seed in range(10):
        rnd = get_method("random")(x[None], mask, [6], seed=seed)[0]
        assert div_gap > _min_pairwise_distance(x, rnd)


def _greedy_max_min_reference(x: torch.Tensor, k: int) -> list[int]:
    """Max-min diversity greedy written out plainly in numpy (the formulation in the DivPrune paper)."""
    dist = 1.0 - _cosine(x)
    n = len(dist)
    nearest = [min(dist[i, j] for j in range(n) if j != i) for i in range(n)]
    chosen = [int(np.argmax(nearest))]
    while len(chosen) < k:
        best, best_gap = -1, -np.inf
        for j in range(n):
            if j in chosen:
                continue
            gap = min(dist[j, c] for c in chosen)
            if gap > best_gap:
                best, best_gap = j, gap
        chosen.append(best)
    return sorted(chosen)


def test_divprune_matches_a_plain_greedy_reference():
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(5))
    idx = get_method("divprune")(x[None], torch.ones(1, 40, dtype=torch.bool), [9])[0]
    assert idx.tolist() == _greedy_max_min_reference(x, 9)


def test_dart_keeps_fewer_near_duplicates_of_its_pivots_than_random():
    x, _ = _clustered([60, 60, 60, 20], d=16, spread=0.05, seed=2)
    n = x.shape[0]
    mask = torch.ones(1, n, dtype=torch.bool)
    num_pivots, k = 4, 40
    kept = get_method("dart")(x[None], mask, [k], num_pivots=num_pivots)[0]
    l1 = x.abs().sum(dim=-1)
    pivots = set(torch.sort(l1, descending=True, stable=True).indices[:num_pivots].tolist())
    assert pivots <= set(kept.tolist())  # the pivots are the largest-L1 tokens, always kept
    cos = _cosine(x)

    def near_duplicates_of_pivots(idx: torch.Tensor) -> int:
        others = [i for i in idx.tolist() if i not in pivots]
        return sum(max(cos[i, p] for p in pivots) > 0.9 for i in others)

    dart_dups = near_duplicates_of_pivots(kept)
    random_dups = [near_duplicates_of_pivots(get_method("random")(x[None], mask, [k], seed=s)[0]) for s in range(5)]
    assert dart_dups < min(random_dups)


def test_dart_rejects_a_bad_pivot_count():
    with pytest.raises(ValueError, match="num_pivots"):
        get_method("dart")(torch.randn(1, 10, 3), torch.ones(1, 10, dtype=torch.bool), [3], num_pivots=0)


def test_gprune_paper_is_gprune_at_threshold_0_7():
    x, _ = _clustered([30, 20, 14], d=8, spread=0.6, seed=3)
    mask = torch.ones(1, x.shape[0], dtype=torch.bool)
    paper = get_method("gprune-paper")(x[None], mask, [16])[0]
    explicit = get_method("gprune")(x[None], mask, [16], similarity_threshold=PAPER_SIMILARITY_THRESHOLD)[0]
    released = get_method("gprune")(x[None], mask, [16])[0]
    assert torch.equal(paper, explicit)
    assert not torch.equal(paper, released)  # the threshold matters on this data
    config = GPruneConfig(similarity_threshold=PAPER_SIMILARITY_THRESHOLD)
    via_config = get_method(config.method)(x[None], mask, [16], **config.selector_params())[0]
    assert torch.equal(via_config, paper)
