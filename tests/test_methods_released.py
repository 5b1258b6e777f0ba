"""DART and DivPrune as released, against independent formulations written from the released code's description.

DART: ZichenWen1/DART, llava/model/language_model/modeling_llama_self.py (``get_retained_image_token``).
DivPrune: vbdi/divprune, LLaVA/llava/model/llava_arch.py (``DivPrune``). Both written here in plain numpy
and Python sets, sharing no code with gprune.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gprune
from gprune.methods import get_method


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def reference_dart(x: np.ndarray, k: int, pivots: int, offset: int) -> list[int]:
    """Released DART on one image's tokens, at sequence positions offset..offset+n-1, image pivots only.

    Quota M // p per pivot (M = k - p), pivots visited as ``for item in list(set(image_indices))``; the
    M % p tokens the release leaves unkept are taken one per pivot in a second round of the same order.
    """
    n = len(x)
    unit = _unit(x.astype(np.float64))
    l1 = np.abs(x).sum(axis=1)
    image_indices = [offset + int(i) for i in np.argsort(-l1, kind="stable")[:pivots]]
    indices_set = set(image_indices)
    valid_indices = set(range(offset, offset + n))
    valid_indices.difference_update(image_indices)
    quota, left = divmod(k - pivots, pivots)

    def take(item: int, count: int) -> None:
        valid_list = sorted(valid_indices)
        similarity = unit[[v - offset for v in valid_list]] @ unit[item - offset]
        picked = [valid_list[i] for i in np.argsort(similarity, kind="stable")[:count]]
        indices_set.update(picked)
        valid_indices.difference_update(picked)

    order = list(set(image_indices))
    for item in order:
        take(item, quota)
    for item in order[:left]:
        take(item, 1)
    return sorted(i - offset for i in indices_set)


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


def reference_divprune(x: np.ndarray, ratio: float) -> list[int]:
    """Released DivPrune on the whole packed image: int(round(ratio * N)) tokens, greedy max-min on 1 - cos."""
    distance = 1.0 - _unit(x.astype(np.float64)) @ _unit(x.astype(np.float64)).T
    selected: list[int] = []
    for i in range(int(round(ratio * len(x)))):
        # first: the second smallest of each column (the smallest is the token itself); then min to the kept
        scores = np.sort(distance, axis=0)[1, :] if i == 0 else distance[selected].min(axis=0)
        selected.append(int(np.argmax(scores)))
    return sorted(selected)


@pytest.mark.parametrize(("rows", "cols"), [(3, 4), (4, 2), (0, 0)])
@pytest.mark.parametrize("ratio", [0.5, 0.3, 0.11])
def test_divprune_released_scores_the_whole_packed_image(rows: int, cols: int, ratio: float) -> None:
    layout = gprune.llava_next_layout(36, rows, cols)
    x = torch.randn(layout.length, 10, generator=torch.Generator().manual_seed(rows * 10 + cols))
    ours = gprune.select_in_layout(x, layout, ratio, method="divprune-released")
    assert ours.tolist() == reference_divprune(x.numpy(), ratio)
    per_group = gprune.select_in_layout(x, layout, ratio, method="divprune")
    assert set(layout.always_keep.tolist()) <= set(per_group.tolist())  # "divprune" keeps every newline
