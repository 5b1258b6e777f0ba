"""Properties of selection that must hold for any input (hypothesis)."""

from __future__ import annotations

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
    d = draw(st.integers(2, 12))  # D = 1 makes all same-sign tokens collinear: exact score ties
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
