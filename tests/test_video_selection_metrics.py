"""The proxy metrics of benchmarks/video_selection.py against brute-force formulations on tiny inputs.

Coverage is checked against a loop of explicit cosines; the patch masks (object patches, static
background, the pan's revealed columns) against a pixel-by-pixel rendering of the same tiny video.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import video_selection as vs  # noqa: E402


def test_coverage_is_the_best_cosine_to_a_kept_token():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(9, 5, generator=generator)
    kept = torch.tensor([1, 4, 7])
    expected = []
    for i in range(9):
        best = -math.inf
        for j in kept.tolist():
            dot = sum(float(x[i, d]) * float(x[j, d]) for d in range(5))
            norm_i = math.sqrt(sum(float(x[i, d]) ** 2 for d in range(5)))
            norm_j = math.sqrt(sum(float(x[j, d]) ** 2 for d in range(5)))
            best = max(best, dot / (norm_i * norm_j))
        expected.append(best)
    got = vs.coverage(x, kept)
    assert got.tolist() == pytest.approx(expected, abs=1e-12)
    assert got[kept].tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-12)


def _box_pixels(box, size):
    x0, y0, x1, y1 = box
    on = np.zeros((size, size), dtype=bool)
    for y in range(size):
        for x in range(size):
            on[y, x] = x0 <= x < x1 and y0 <= y < y1
    return on


def _patches_touching(pixels, grid, patch):
    out = []
    for r in range(grid):
        for c in range(grid):
            out.append(bool(pixels[r * patch : (r + 1) * patch, c * patch : (c + 1) * patch].any()))
    return np.array(out)


@pytest.mark.parametrize("box", [(0, 0, 3, 3), (2, 3, 7, 5), (3, 3, 6, 6), (4, 0, 12, 1), (11, 11, 12, 12)])
def test_box_patches_are_the_patches_holding_a_box_pixel(box):
    grid, patch = 4, 3
    expected = _patches_touching(_box_pixels(box, grid * patch), grid, patch)
    assert vs.box_patches(box, grid, patch).tolist() == expected.tolist()


def test_object_masks_against_a_pixel_rendering():
    grid, patch = 4, 3
    boxes = [(0, 0, 4, 4), (2, 1, 6, 5), (5, 4, 9, 8), (5, 4, 9, 8)]
    pixels = [_box_pixels(b, grid * patch) for b in boxes]
    on, static = vs.object_masks(boxes, grid, patch)
    for t in range(len(boxes)):
        now = _patches_touching(pixels[t], grid, patch)
        before = _patches_touching(pixels[t - 1], grid, patch) if t else None
        for p in range(grid * grid):
            assert on[t * grid * grid + p] == now[p]
            expected_static = t > 0 and not now[p] and not before[p]
            assert static[t * grid * grid + p] == expected_static, (t, p)


@pytest.mark.parametrize("step", [1, 2, 3, 5])
def test_pan_masks_mark_the_columns_showing_unseen_pixels(step):
    grid, patch, frames = 4, 3, 3
    size = grid * patch
    revealed, old_edge = vs.pan_masks(frames, step, grid, patch)
    for t in range(frames):
        for r in range(grid):
            for c in range(grid):
                # pixel column x of frame t shows column x + step * t of the wide photo; the previous
                # frame showed columns [step * (t - 1), step * (t - 1) + size)
                unseen = t > 0 and any(
                    not step * (t - 1) <= x + step * t < step * (t - 1) + size
                    for x in range(c * patch, (c + 1) * patch)
                )
                i = (t * grid + r) * grid + c
                assert revealed[i] == unseen, (t, r, c)
                assert old_edge[i] == (t > 0 and c == 0)


def test_share_and_kept_rate():
    selected = np.array([True, False, True, True, False, False])
    kept = np.array([0, 1, 4])
    assert vs.share(selected, kept) == pytest.approx(1 / 3)  # of 3 kept, token 0 is selected
    assert vs.kept_rate(selected, kept) == pytest.approx(1 / 3)  # of 3 selected (0, 2, 3), token 0 is kept
