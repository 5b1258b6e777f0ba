"""precision="released-fp16" repeats the released code's fp16 arithmetic (tests/reference_released_fp16.py)."""

from __future__ import annotations

import pytest
import torch

import gprune
from gprune.methods import get_method
from gprune.released_fp16 import released_fp16_scores
from reference_gprune import clustered_features
from reference_released_fp16 import (
    reference_released_fp16_llava_next,
    reference_released_fp16_scores,
    reference_released_fp16_select,
)

PARAMS = {"similarity_threshold": 0.5, "temperature": 0.03, "iterations": 5}


def scores(x: torch.Tensor, s: float = 0.5, tau: float = 0.03, t: int = 5) -> torch.Tensor:
    return released_fp16_scores(x, similarity_threshold=s, temperature=tau, iterations=t)


# D = 64: the two fp32 summation orders (BLAS sgemm here, torch's fp16 kernel in the reference) round
# every similarity to the same fp16 value, so the scores must agree bitwise.
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    ("s", "tau", "t"), [(0.5, 0.03, 5), (0.7, 0.03, 5), (0.0, 0.03, 5), (-0.3, 0.05, 3), (0.5, 0.1, 1), (0.5, 0.03, 8)]
)
def test_scores_equal_the_reference_bitwise(seed: int, s: float, tau: float, t: int) -> None:
    x = clustered_features(300, 64, seed=seed)
    assert torch.equal(scores(x, s, tau, t), reference_released_fp16_scores(x, s, tau, t))


@pytest.mark.parametrize("seed", range(3))
def test_kept_sets_equal_the_reference_on_576_tokens(seed: int) -> None:
    x = clustered_features(576, 64, seed=20 + seed)
    mask = torch.ones(1, 576, dtype=torch.bool)
    for ratio in (0.5, 1 / 3, 0.11):
        ours = get_method("gprune")(x[None], mask, [int(ratio * 576)], precision="released-fp16", **PARAMS)[0]
        assert torch.equal(ours, reference_released_fp16_select(x, ratio)), (seed, ratio)


@pytest.mark.parametrize(("rows", "cols", "seed"), [(24, 36, 0), (46, 50, 1)])
def test_llava_next_selection_equals_the_reference(rows: int, cols: int, seed: int) -> None:
    x = clustered_features(576 + rows * (cols + 1), 64, seed=seed)
    for ratio in (0.5, 0.11):  # 0.11 on 46 x 50: the released grid count 252, not int(0.11 * 2300) = 253
        ours = gprune.select_llava_next(
            x, base_tokens=576, grid_rows=rows, grid_cols=cols, keep=ratio, precision="released-fp16"
        )
        assert torch.equal(ours, reference_released_fp16_llava_next(x, 576, rows, cols, ratio)), (rows, ratio)


def test_released_fp16_differs_from_fp32_and_is_reached_through_the_config() -> None:
    """Guard against a vacuous mode: fp16 rounding changes the kept set on this input."""
    x = clustered_features(576, 64, seed=3)
    layout = gprune.single_group_layout(576)
    fp32 = gprune.GPruneConfig(keep=0.5)
    fp16 = gprune.GPruneConfig(keep=0.5, precision="released-fp16")
    kept32 = gprune.select_in_layout(x, layout, 0.5, **fp32.selector_params())
    kept16 = gprune.select_in_layout(x, layout, 0.5, **fp16.selector_params())
    assert torch.equal(kept16, reference_released_fp16_select(x, 0.5))
    assert not torch.equal(kept16, kept32)
    assert gprune.GPruneConfig.from_json(fp16.to_json()) == fp16
    paper = gprune.GPruneConfig(keep=0.5, method="gprune-paper", precision="released-fp16")
    by_paper = gprune.select_in_layout(x, layout, 0.5, method="gprune-paper", **paper.selector_params())
    assert torch.equal(by_paper, reference_released_fp16_select(x, 0.5, threshold=0.7))


def test_precision_is_checked() -> None:
    with pytest.raises(ValueError, match="precision must be one of"):
        gprune.GPruneConfig(precision="fp16")
    with pytest.raises(ValueError, match="applies to G-Prune"):
        gprune.GPruneConfig(method="random", precision="released-fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        get_method("gprune")(torch.randn(1, 4, 3), torch.ones(1, 4, dtype=torch.bool), [2], precision="bf16")


def test_batched_padded_items_equal_items_alone() -> None:
    x = clustered_features(2 * 120, 32, seed=9).view(2, 120, 32)
    mask = torch.ones(2, 120, dtype=torch.bool)
    mask[1, 90:] = False
    x[1, 90:] = float("nan")  # padding content never matters
    batched = released_fp16_scores(x, mask=mask, **PARAMS)
    assert torch.equal(batched[0], scores(x[0]))
    assert torch.equal(batched[1, :90], scores(x[1, :90]))
    assert bool(torch.isneginf(batched[1, 90:]).all())


def test_orthogonal_tokens_are_not_edges_at_threshold_zero_as_released() -> None:
    """At s <= 0 the released `abs(A) < 1e-6` rule also removes edges of (near-)orthogonal tokens."""
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert scores(x, 0.0).tolist() == [1.0, 2.0]  # no edge: degree 1, information stays
    fp32 = gprune.graph_scores(x, similarity_threshold=0.0)  # fp32 mode: S = 0 >= s is an edge, degree 2
    torch.testing.assert_close(fp32, torch.tensor([0.5, 1.0]))


def test_zero_vectors_are_isolated_and_overflow_is_an_error() -> None:
    x = clustered_features(40, 8, seed=1)
    x[5] = 0.0
    s = scores(x)
    assert s[5] == 0 and bool(torch.isfinite(s).all())
    assert torch.equal(s[torch.arange(40) != 5], scores(x[torch.arange(40) != 5]))
    with pytest.raises(ValueError, match="fp16's range"):
        scores(torch.full((4, 3), 70000.0))
    with pytest.raises(ValueError, match="norm exceeds fp16's range"):
        scores(torch.full((4, 4), 40000.0))
