"""Layouts partition the packed tokens; kept counts are pure functions of layout and keep."""

from __future__ import annotations

import pytest
import torch

import gprune
from gprune.layouts import group_keep_counts, select_groups
from reference_gprune import clustered_features


def test_llava_next_layout_places_newlines_at_row_ends() -> None:
    layout = gprune.llava_next_layout(4, 2, 3)  # 4 base + 2 rows of (3 + newline)
    assert layout.length == 12
    assert layout.groups[0].tolist() == [0, 1, 2, 3]
    assert layout.groups[1].tolist() == [4, 5, 6, 8, 9, 10]
    assert layout.always_keep.tolist() == [7, 11]
    single = gprune.llava_next_layout(4, 0, 0)
    assert single.length == 5 and single.always_keep.tolist() == [4]


def test_layout_must_partition_the_tokens() -> None:
    with pytest.raises(ValueError, match="partition"):
        gprune.TokenLayout(3, (torch.tensor([0, 1]),), torch.tensor([1]))
    with pytest.raises(ValueError, match="empty group"):
        gprune.TokenLayout(1, (torch.tensor([0]), torch.empty(0, dtype=torch.long)), torch.empty(0, dtype=torch.long))


@pytest.mark.parametrize("ratio", [0.5, 1 / 3, 0.11, 1.0])
def test_ratio_keeps_int_of_ratio_per_group_plus_newlines(ratio: float) -> None:
    layout = gprune.llava_next_layout(576, 48, 48)
    assert group_keep_counts(layout, ratio) == [int(ratio * 576), int(ratio * 2304)]
    assert gprune.kept_token_count(layout, ratio) == int(ratio * 576) + int(ratio * 2304) + 48


@pytest.mark.parametrize("budget", [640, 320, 160, 51, 2928, 5000])
def test_token_budget_is_met_exactly_and_split_by_group_size(budget: int) -> None:
    layout = gprune.llava_next_layout(576, 48, 48)
    counts = group_keep_counts(layout, budget)
    assert sum(counts) + 48 == min(budget, layout.length)
    assert all(1 <= c <= n for c, n in zip(counts, (576, 2304), strict=True))
    if budget <= layout.length:
        assert abs(counts[1] - 4 * counts[0]) <= 4  # grid is 4x the base view


def test_token_budget_below_always_kept_is_an_error() -> None:
    with pytest.raises(ValueError, match="always kept"):
        group_keep_counts(gprune.llava_next_layout(576, 48, 48), 49)


def test_selection_size_equals_the_pure_count() -> None:
    layout = gprune.llava_next_layout(576, 24, 36)
    x = clustered_features(layout.length, 32, seed=1)
    for keep in (0.5, 0.2, 320, 1.0):
        kept = gprune.select_in_layout(x, layout, keep)
        assert kept.numel() == gprune.kept_token_count(layout, keep)
        assert set(layout.always_keep.tolist()) <= set(kept.tolist())
    assert torch.equal(gprune.select_in_layout(x, layout, 1.0), torch.arange(layout.length))


def test_select_groups_batches_equal_sizes_without_changing_results() -> None:
    groups = [clustered_features(n, 16, seed=s) for s, n in enumerate([30, 50, 30, 50, 7])]
    counts = [10, 20, 5, 50, 3]
    together = select_groups(groups, counts)
    alone = [gprune.select_tokens(g, c) for g, c in zip(groups, counts, strict=True)]
    for a, b in zip(together, alone, strict=True):
        assert torch.equal(a, b)


def test_unknown_method_lists_available_ones() -> None:
    with pytest.raises(ValueError, match="available: .*gprune"):
        select_groups([torch.randn(3, 2)], [1], method="nope")
