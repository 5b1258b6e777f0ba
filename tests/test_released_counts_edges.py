"""Counts and edges as the released code defines them: grid count order, the threshold's range, edge tolerance."""

from __future__ import annotations

import itertools

import pytest
import torch

import gprune
from gprune.core import cosine_similarity_matrix
from gprune.layouts import group_keep_counts, ratio_count
from reference_gprune import clustered_features


def test_grid_count_is_evaluated_left_to_right_as_released() -> None:
    layout = gprune.llava_next_layout(576, 46, 50)
    assert int(0.11 * 46 * 50) == 252 and int(0.11 * (46 * 50)) == 253  # the two orders differ here
    assert group_keep_counts(layout, 0.11) == [int(0.11 * 576), 252]
    assert gprune.kept_token_count(layout, 0.11) == 63 + 252 + 46


def test_grid_counts_equal_the_released_expression_everywhere() -> None:
    ratios = (0.1, 0.11, 0.22, 0.25, 0.3, 1 / 3, 0.5, 0.7)
    differ = 0
    for ratio, rows, cols in itertools.product(ratios, range(1, 50, 3), range(1, 50, 4)):
        released = max(1, int(ratio * rows * cols))  # the released line, keep_ratio * row_num * col_num
        assert group_keep_counts(gprune.llava_next_layout(576, rows, cols), ratio)[1] == released
        differ += released != max(1, int(ratio * (rows * cols)))
    assert differ > 0  # the sweep holds grids where the order matters


def test_divprune_released_counts_the_whole_image_rounded() -> None:
    layout = gprune.llava_next_layout(576, 24, 36)
    n = 576 + 24 * 37
    for ratio in (0.5, 1 / 3, 0.11, 0.2):
        assert gprune.kept_token_count(layout, ratio, method="divprune-released") == int(round(ratio * n))
    assert ratio_count(0.5, (5,), rounding="round") == 2  # Python's round: half to even, as released
    assert gprune.kept_token_count(layout, 100, method="divprune-released") == 100


def test_thresholds_next_to_one_are_rejected_naming_the_problem() -> None:
    for s in (1 - 1e-6, 1 - 1e-7, 0.9999999):
        with pytest.raises(ValueError, match="below 1 - 1e-6.*rounding"):
            gprune.GPruneConfig(similarity_threshold=s)
        with pytest.raises(ValueError, match="below 1 - 1e-6"):
            gprune.graph_scores(torch.randn(5, 3), similarity_threshold=s)
    gprune.GPruneConfig(similarity_threshold=1 - 2e-6)
    with pytest.raises(ValueError, match=r"\[-1, 1 - 1e-6\)"):
        gprune.GPruneConfig(similarity_threshold=1.0)


def test_computed_self_similarity_is_within_1e_6_of_one_at_d_4096() -> None:
    """Why the bound is 1 - 1e-6: below it every computed diagonal is an edge, as gprune assumes."""
    x = clustered_features(1200, 4096, seed=4) * 30
    unit = torch.nn.functional.normalize(x, dim=-1)
    # the diagonal of a GEMM (blocked sums); a plain running sum over D strays further (3e-6 measured)
    assert float(((unit @ unit.T).diagonal() - 1).abs().max()) < 1e-6
    assert float((cosine_similarity_matrix(unit[None])[0].diagonal() - 1).abs().max()) < 1e-6


EDGE_TOLERANCE = 1e-6
"""docs/algorithm.md: fp32 similarities (blockwise or one GEMM) are within this of the exact cosine at D = 4096."""


def test_edges_differ_from_one_gemm_only_within_the_documented_tolerance() -> None:
    x = clustered_features(900, 4096, seed=8)  # 900 rows: two row blocks, so the blockwise path runs
    unit = torch.nn.functional.normalize(x, dim=-1)
    blockwise = cosine_similarity_matrix(unit[None])[0]
    one_gemm = unit @ unit.T
    exact = unit.double() @ unit.double().T
    assert float((blockwise.double() - exact).abs().max()) < EDGE_TOLERANCE
    assert float((one_gemm.double() - exact).abs().max()) < EDGE_TOLERANCE
    off = ~torch.eye(900, dtype=torch.bool)
    near_half = ((exact - 0.5).abs() < 0.01) & off
    for s in exact[near_half][:100].tolist():  # thresholds exactly at an entry's exact cosine
        flips = (blockwise >= s) != (one_gemm >= s)
        assert bool(((exact[flips] - s).abs() <= EDGE_TOLERANCE).all())
    assert bool(((blockwise >= 0.5) == (one_gemm >= 0.5)).all())  # the default threshold has no entry that near
