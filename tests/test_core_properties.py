"""Properties of selection that must hold for any input (hypothesis)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gprune
from reference_gprune import clustered_features

keeps = st.one_of(st.floats(min_value=0.01, max_value=1.0), st.integers(min_value=1, max_value=80))


@st.composite
def batches(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    b = draw(st.integers(1, 4))
    n = draw(st.integers(1, 60))
    d = draw(st.integers(1, 12))  # D = 1: all same-sign tokens share a direction, so their scores tie exactly
    seed = draw(st.integers(0, 2**16))
    x = clustered_features(b * n, d, seed=seed, clusters=draw(st.integers(1, 5))).view(b, n, d)
    valid = torch.rand(b, n, generator=torch.Generator().manual_seed(seed)) > draw(st.floats(0.0, 0.7))
    valid[:, draw(st.integers(0, n - 1))] = True  # at least one valid token per item
    return x, valid


@settings(max_examples=60, deadline=None)
@given(batches(), keeps)
def test_kept_indices_are_unique_sorted_in_range_exact_and_valid(
    data: tuple[torch.Tensor, torch.Tensor], keep: float | int
) -> None:
    x, valid = data
    kept = gprune.select_tokens(x, keep, mask=valid)
    assert isinstance(kept, list) and len(kept) == x.shape[0]
    for b, idx in enumerate(kept):
        n_valid = int(valid[b].sum())
        assert idx.dtype == torch.long
        assert idx.numel() == gprune.keep_count(keep, n_valid)
        assert torch.equal(idx, torch.unique(idx))  # unique and ascending
        assert bool(valid[b, idx].all())  # masked tokens are never kept


@settings(max_examples=100, deadline=None)
@given(batches(), keeps, st.integers(0, 3))
def test_result_is_independent_of_batch_composition(
    data: tuple[torch.Tensor, torch.Tensor], keep: float | int, extra_seed: int
) -> None:
    x, valid = data
    alone = [gprune.select_tokens(x[b][valid[b]], keep) for b in range(x.shape[0])]
    batched = gprune.select_tokens(x, keep, mask=valid)
    for b in range(x.shape[0]):
        positions = valid[b].nonzero().squeeze(-1)
        assert torch.equal(batched[b], positions[alone[b]])
    # adding unrelated items to the batch changes nothing
    other = clustered_features(x.shape[1] * 2, x.shape[2], seed=extra_seed).view(2, x.shape[1], x.shape[2])
    other_valid = torch.ones(2, x.shape[1], dtype=torch.bool)
    bigger = gprune.select_tokens(torch.cat([other, x]), keep, mask=torch.cat([other_valid, valid]))
    for b in range(x.shape[0]):
        assert torch.equal(bigger[b + 2], batched[b])


def test_chunked_batches_equal_one_chunk(monkeypatch) -> None:
    """Large batches are scored in chunks (GRAPH_CHUNK_BYTES); chunking must not change any number."""
    import gprune.core

    x = clustered_features(5 * 40, 16, seed=9).view(5, 40, 16)
    valid = torch.rand(5, 40, generator=torch.Generator().manual_seed(9)) > 0.2
    whole_scores = gprune.graph_scores(x, mask=valid)
    whole_flow = gprune.information_flow(x, mask=valid)
    monkeypatch.setattr(gprune.core, "GRAPH_CHUNK_BYTES", 2 * 4 * 40 * 40)  # two items per chunk
    torch.testing.assert_close(gprune.graph_scores(x, mask=valid), whole_scores, rtol=0, atol=0)
    torch.testing.assert_close(gprune.information_flow(x, mask=valid), whole_flow, rtol=0, atol=0)



@pytest.mark.parametrize("d", [1, 6])
def test_tokens_of_one_direction_tie_exactly_and_the_lower_indices_are_kept_in_every_layout(d: int) -> None:
    """Tokens with equal unit vectors score the same in exact arithmetic; fp32 rounding must not order them.

    D = 6: duplicates and parallel copies of one token; D = 1: every token of one sign. Without one shared
    score, which of them a padded, batched call keeps differs from a single call for some k.
    """
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, d, generator=g)
    if d > 1:
        x[[3, 11, 17, 25, 28]] = x[3].clone()
        x[[11, 25]] *= 4.0  # parallel copies: same unit vector, other initial information
    unit = torch.nn.functional.normalize(x, dim=-1)
    group = (unit == unit[3]).all(dim=-1).nonzero().squeeze(-1).tolist()
    assert len(group) >= 5
    assert gprune.graph_scores(x)[group].unique().numel() == 1  # one score, bitwise
    positions = torch.randperm(41, generator=g)[:30].sort().values  # the tokens among padding ...
    padded = torch.full((2, 41, d), float("nan"))
    valid = torch.zeros(2, 41, dtype=torch.bool)
    padded[1, positions], valid[1, positions] = x, True
    padded[0, :30], valid[0, :30] = torch.randn(30, d, generator=g), True  # ... after another item
    for k in range(1, 31):
        kept = gprune.select_tokens(x, k)
        assert torch.equal(gprune.select_tokens(padded, k, mask=valid)[1], positions[kept]), k
        in_group = sorted(set(group) & set(kept.tolist()))
        assert in_group == group[: len(in_group)], k  # the lower indices of the tie
