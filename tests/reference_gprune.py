"""An independent, deliberately literal G-Prune reference, written from DESIGN.md §1.1-1.2.

It follows the released code's formulation: dense transition matrix with a masked softmax, the T-step
transition as ``matrix_power``, degree as the number of non-zero entries of P's row, ``int(ratio * n)``
top-k with ``torch.topk``. It shares no code with gprune.
"""

from __future__ import annotations

import torch
from torch import Tensor


def reference_scores(x: Tensor, threshold: float = 0.5, tau: float = 0.03, iterations: int = 5) -> Tensor:
    x = x.float()
    unit = torch.nn.functional.normalize(x, dim=-1)
    sim = unit @ unit.T
    logits = (sim / tau).masked_fill(sim < threshold, float("-inf"))
    transition = torch.softmax(logits, dim=-1)
    degree = (transition != 0).sum(dim=-1)
    info = x.norm(dim=-1)
    flow = info @ torch.linalg.matrix_power(transition, iterations)
    return flow / degree


def reference_select(x: Tensor, ratio: float, k: int | None = None, **kwargs: float) -> Tensor:
    scores = reference_scores(x, **kwargs)
    k = int(ratio * x.shape[0]) if k is None else k
    return torch.topk(scores, k).indices.sort().values


def reference_select_llava_next(
    x: Tensor, base: int, rows: int, cols: int, ratio: float, **kwargs: float
) -> Tensor:
    """The released code's LLaVA-NeXT grouping: base and grid scored apart, newlines always kept.

    The grid keeps ``int(ratio * rows * cols)`` tokens, evaluated left to right as the released line is.
    """
    kept_base = reference_select(x[:base], ratio, **kwargs)
    if rows == 0:
        return torch.cat([kept_base, torch.tensor([base])])
    packed = x[base:].reshape(rows, cols + 1, -1)
    grid = packed[:, :cols].reshape(rows * cols, -1)
    kept_grid = reference_select(grid, ratio, int(ratio * rows * cols), **kwargs)
    r, c = kept_grid // cols, kept_grid % cols
    kept_grid_packed = base + r * (cols + 1) + c
    newlines = base + torch.arange(rows) * (cols + 1) + cols
    return torch.cat([kept_base, kept_grid_packed, newlines]).sort().values


def clustered_features(n: int, d: int, *, seed: int, clusters: int = 8) -> Tensor:
    """Tokens around a few random directions with random spread and norms: a graph with real structure.

    Pure Gaussian features are nearly orthogonal, which gives an empty graph (only self-loops). Each token's
    own noise level spreads within-cluster cosines over roughly 0.4-0.95, across both thresholds tested.
    """
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(clusters, d, generator=g), dim=-1)
    labels = torch.randint(0, clusters, (n,), generator=g)
    noise = 0.2 + 1.3 * torch.rand(n, 1, generator=g)
    directions = centres[labels] + noise * torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1)
    norms = 0.5 + 2.0 * torch.rand(n, 1, generator=g)
    return directions * norms
