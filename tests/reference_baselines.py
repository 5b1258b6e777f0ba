"""Independent formulations of DART's and DivPrune's released selection, written from their released code.

DART: ZichenWen1/DART, llava/model/language_model/modeling_llama_self.py (``get_retained_image_token``).
DivPrune: vbdi/divprune, LLaVA/llava/model/llava_arch.py (``DivPrune``). Plain numpy and Python sets,
sharing no code with gprune.
"""

from __future__ import annotations

import numpy as np


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


def reference_divprune(x: np.ndarray, ratio: float) -> list[int]:
    """Released DivPrune on the whole packed image: int(round(ratio * N)) tokens, greedy max-min on 1 - cos."""
    distance = 1.0 - _unit(x.astype(np.float64)) @ _unit(x.astype(np.float64)).T
    selected: list[int] = []
    for i in range(int(round(ratio * len(x)))):
        # first: the second smallest of each column (the smallest is the token itself); then min to the kept
        scores = np.sort(distance, axis=0)[1, :] if i == 0 else distance[selected].min(axis=0)
        selected.append(int(np.argmax(scores)))
    return sorted(selected)
