"""G-Prune keeps exactly the tokens the released code's formulation keeps (tests/reference_gprune.py)."""

from __future__ import annotations

import pytest
import torch

import gprune
from reference_gprune import (
    clustered_features,
    reference_scores,
    reference_select,
    reference_select_llava_next,
)

RATIOS = (0.5, 1 / 3, 0.11)
THRESHOLDS = (0.5, 0.7)


@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize("seed", range(12))
def test_single_group_of_576_matches_reference(seed: int, threshold: float) -> None:
    x = clustered_features(576, 64, seed=seed)
    for ratio in RATIOS:
        ours = gprune.select_tokens(x, ratio, similarity_threshold=threshold)
        assert torch.equal(ours, reference_select(x, ratio, threshold=threshold)), (seed, threshold, ratio)


@pytest.mark.parametrize("seed", range(4))
def test_scores_match_reference_values(seed: int) -> None:
    x = clustered_features(400, 48, seed=seed)
    ref = reference_scores(x, threshold=0.5)
    torch.testing.assert_close(gprune.graph_scores(x), ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("rows", "cols", "seed"),
    # 46 x 50 at ratio 0.11: the released grid count int(0.11 * 46 * 50) = 252, not int(0.11 * 2300) = 253
    [(24, 36, 0), (24, 36, 1), (48, 48, 2), (36, 24, 3), (36, 24, 4), (46, 50, 7), (0, 0, 5), (0, 0, 6)],
)
@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_llava_next_grouping_matches_reference(rows: int, cols: int, seed: int, threshold: float) -> None:
    base = 576
    x = clustered_features(base + rows * (cols + 1) + (1 if rows == 0 else 0), 64, seed=seed)
    for ratio in RATIOS:
        ours = gprune.select_llava_next(
            x, base_tokens=base, grid_rows=rows, grid_cols=cols, keep=ratio, similarity_threshold=threshold
        )
        ref = reference_select_llava_next(x, base, rows, cols, ratio, threshold=threshold)
        assert torch.equal(ours, ref), (rows, cols, seed, threshold, ratio)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_input_is_scored_in_fp32(dtype: torch.dtype) -> None:
    x = clustered_features(576, 64, seed=7).to(dtype)
    scores = gprune.graph_scores(x)
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores, reference_scores(x.float()), rtol=1e-4, atol=1e-6)
    assert torch.equal(gprune.select_tokens(x, 1 / 3), reference_select(x.float(), 1 / 3))


def test_other_hyper_parameters_match_reference() -> None:
    x = clustered_features(300, 32, seed=11)
    for tau, iterations in [(0.1, 1), (0.05, 3), (0.03, 8)]:
        ours = gprune.select_tokens(x, 0.25, temperature=tau, iterations=iterations)
        assert torch.equal(ours, reference_select(x, 0.25, tau=tau, iterations=iterations))


def test_fixture_exercises_the_graph() -> None:
    """Guard against a vacuous parity test: the graph must change the answer."""
    x = clustered_features(576, 64, seed=0)
    at_05 = gprune.select_tokens(x, 1 / 3, similarity_threshold=0.5)
    at_07 = gprune.select_tokens(x, 1 / 3, similarity_threshold=0.7)
    by_norm = torch.topk(x.norm(dim=-1), at_05.numel()).indices.sort().values
    assert not torch.equal(at_05, at_07)
    assert not torch.equal(at_05, by_norm)
    unit = torch.nn.functional.normalize(x, dim=-1)
    degrees = ((unit @ unit.T) >= 0.5).sum(dim=-1)
    assert degrees.min() >= 1 and degrees.float().mean() > 5
