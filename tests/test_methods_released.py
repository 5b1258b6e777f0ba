"""DART and DivPrune as released, against independent formulations of their released code (reference_baselines)."""

from __future__ import annotations

import pytest
import torch

import gprune
from gprune.methods import get_method
from reference_baselines import reference_dart, reference_divprune

CASES = [(64, 24, 8, 0), (64, 24, 8, 35), (120, 41, 4, 35), (90, 30, 6, 3)]


@pytest.mark.parametrize(("n", "k", "pivots", "offset"), CASES)
@pytest.mark.parametrize("seed", range(3))
def test_dart_follows_the_released_order_and_quota(n: int, k: int, pivots: int, offset: int, seed: int) -> None:
    x = torch.randn(n, 12, generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(1, n, dtype=torch.bool)
    ours = get_method("dart")(x[None], mask, [k], num_pivots=pivots, sequence_offset=offset)
    assert ours[0].tolist() == reference_dart(x.numpy(), k, pivots, offset)


def test_released_pivot_order_depends_on_the_position_and_strongest_first_does_not() -> None:
    """The released set order changes with the image's place in the prompt; that is why both variants exist."""
    mask = torch.ones(1, 200, dtype=torch.bool)
    differ = 0
    for seed in range(10):
        x = torch.randn(1, 200, 16, generator=torch.Generator().manual_seed(seed))
        by_offset = {o: get_method("dart")(x, mask, [50], sequence_offset=o)[0] for o in (0, 35, 36)}
        differ += not torch.equal(by_offset[35], by_offset[36])
        strongest = get_method("dart-strongest-first")(x, mask, [50])[0]
        differ += not torch.equal(strongest, by_offset[0])
    assert differ > 0


@pytest.mark.parametrize(("rows", "cols"), [(3, 4), (4, 2), (0, 0)])
@pytest.mark.parametrize("ratio", [0.5, 0.3, 0.11])
def test_divprune_released_scores_the_whole_packed_image(rows: int, cols: int, ratio: float) -> None:
    layout = gprune.llava_next_layout(36, rows, cols)
    x = torch.randn(layout.length, 10, generator=torch.Generator().manual_seed(rows * 10 + cols))
    ours = gprune.select_in_layout(x, layout, ratio, method="divprune-released")
    assert ours.tolist() == reference_divprune(x.numpy(), ratio)
    per_group = gprune.select_in_layout(x, layout, ratio, method="divprune")
    assert set(layout.always_keep.tolist()) <= set(per_group.tolist())  # "divprune" keeps every newline
