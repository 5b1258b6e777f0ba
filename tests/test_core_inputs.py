"""Bad input fails with an error naming the problem; odd but valid input behaves as documented."""

from __future__ import annotations

import math

import pytest
import torch

import gprune
from reference_gprune import clustered_features


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (torch.randn(5), "shape"),
        (torch.randn(2, 3, 4, 5), "shape"),
        (torch.zeros(0, 8), "no tokens"),
        (torch.zeros(4, 0), "D = 0"),
        (torch.tensor([[1.0, float("nan")], [1.0, 2.0]]), "NaN or Inf"),
        (torch.tensor([[1.0, float("inf")], [1.0, 2.0]]), "NaN or Inf"),
    ],
)
def test_bad_features_raise_value_error(features: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gprune.graph_scores(features)


def test_non_tensor_and_integer_features_raise_type_error() -> None:
    with pytest.raises(TypeError, match="torch.Tensor"):
        gprune.graph_scores([[1.0, 2.0]])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="floating-point"):
        gprune.graph_scores(torch.ones(3, 4, dtype=torch.int64))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"temperature": 0.0}, ValueError, "temperature"),
        ({"temperature": -1.0}, ValueError, "temperature"),
        ({"temperature": math.inf}, ValueError, "temperature"),
        ({"iterations": 0}, ValueError, "iterations"),
        ({"iterations": 2.5}, TypeError, "iterations"),
        ({"similarity_threshold": 1.0}, ValueError, "similarity_threshold"),
        ({"similarity_threshold": -1.5}, ValueError, "similarity_threshold"),
    ],
)
def test_bad_hyper_parameters(kwargs: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        gprune.graph_scores(torch.randn(4, 3), **kwargs)


@pytest.mark.parametrize(
    ("keep", "error", "message"),
    [(0, ValueError, "count must be >= 1"), (-3, ValueError, ">= 1"), (0.0, ValueError, r"\(0, 1\]"),
     (1.5, ValueError, r"\(0, 1\]"), (math.nan, ValueError, r"\(0, 1\]"), (True, TypeError, "keep"),
     ("0.5", TypeError, "keep")],
)
def test_bad_keep(keep: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        gprune.select_tokens(torch.randn(8, 4), keep)  # type: ignore[arg-type]


def test_mask_errors() -> None:
    x = torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match="mask shape"):
        gprune.graph_scores(x, mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="torch.bool"):
        gprune.graph_scores(x, mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match="no valid token in batch item"):
        gprune.graph_scores(x, mask=torch.tensor([[True] * 5, [False] * 5]))


def test_packed_layout_length_mismatch_names_the_layout() -> None:
    with pytest.raises(ValueError, match=r"base \+ rows\*\(cols\+1\)"):
        gprune.select_llava_next(torch.randn(576 + 24 * 36, 8), base_tokens=576, grid_rows=24, grid_cols=36, keep=0.5)
    with pytest.raises(ValueError, match="single tile"):
        gprune.select_llava_next(torch.randn(576, 8), base_tokens=576, grid_rows=0, grid_cols=0, keep=0.5)
    with pytest.raises(ValueError, match="both be 0"):
        gprune.select_llava_next(torch.randn(600, 8), base_tokens=576, grid_rows=0, grid_cols=3, keep=0.5)


def test_zero_vectors_are_isolated_nodes_with_zero_score() -> None:
    x = clustered_features(64, 16, seed=3)
    x[[5, 17]] = 0.0
    scores = gprune.graph_scores(x)
    assert torch.isfinite(scores).all()
    assert scores[5] == 0 and scores[17] == 0
    # the other tokens score as if the zero vectors were absent
    keep = torch.ones(64, dtype=torch.bool)
    keep[[5, 17]] = False
    torch.testing.assert_close(scores[keep], gprune.graph_scores(x[keep]), rtol=1e-5, atol=1e-7)


def test_non_positive_threshold_still_isolates_zero_vectors() -> None:
    x = clustered_features(32, 8, seed=4)
    x[0] = 0.0
    assert gprune.graph_scores(x, similarity_threshold=-0.5)[0] == 0


def test_masked_tokens_score_minus_inf_and_do_not_change_the_rest() -> None:
    x = clustered_features(50, 16, seed=5)
    mask = torch.ones(50, dtype=torch.bool)
    mask[10:20] = False
    x_garbage = x.clone()
    x_garbage[10:20] = float("nan")  # masked tokens may hold anything
    scores = gprune.graph_scores(x_garbage.unsqueeze(0), mask=mask.unsqueeze(0))[0]
    assert torch.isinf(scores[~mask]).all() and (scores[~mask] < 0).all()
    torch.testing.assert_close(scores[mask], gprune.graph_scores(x[mask]), rtol=1e-5, atol=1e-7)


def test_keep_count_follows_int_of_ratio_times_n() -> None:
    assert gprune.keep_count(0.5, 577) == 288
    assert gprune.keep_count(0.11, 2304) == int(0.11 * 2304)
    assert gprune.keep_count(0.001, 10) == 1  # at least one
    assert gprune.keep_count(1.0, 7) == 7
    assert gprune.keep_count(320, 100) == 100  # a count is capped at n
    assert gprune.keep_count(320, 2880) == 320


def test_features_whose_norm_overflows_fp32_are_reported() -> None:
    x = torch.ones(4, 8)
    x[2] = 1e30
    with pytest.raises(ValueError, match="too large for fp32"):
        gprune.graph_scores(x)


@pytest.mark.parametrize("n", [1, 383, 768, 1000, 2304])
def test_blockwise_similarity_equals_the_full_product(n: int) -> None:
    from gprune.core import cosine_similarity_matrix

    unit = torch.nn.functional.normalize(clustered_features(2 * n, 24, seed=n).view(2, n, 24), dim=-1)
    sim = cosine_similarity_matrix(unit)
    torch.testing.assert_close(sim, unit @ unit.mT, rtol=0, atol=2e-6)
    assert torch.equal(sim, sim.mT)  # the mirrored blocks are exact copies
