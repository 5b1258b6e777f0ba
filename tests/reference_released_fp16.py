"""An independent reference for G-Prune's released fp16 arithmetic: the released code's lines on fp16 tensors.

Written from the released scoring (jytmelon/G-Prune, LLaVA-NeXT/llava/model/llava_arch.py, as DESIGN.md
§1.1 and docs/algorithm.md describe it), run with torch's own fp16 CPU ops: those store every result in
fp16 and compute inside in fp32, as CUDA's do. One op differs between the two devices and is written
as CUDA runs it: a division by a Python scalar is ``a * (1 / fp32(scalar))`` on CUDA, a true division on
the CPU. Top-k ties go to the lower index (CUDA's topk gathers tied values in index order). It shares no
code with gprune.
"""

from __future__ import annotations

import torch
from torch import Tensor


def reference_released_fp16_scores(x: Tensor, threshold: float = 0.5, tau: float = 0.03, iterations: int = 5) -> Tensor:
    feature = x.half()
    normalized = torch.nn.functional.normalize(feature, p=2, dim=1)
    a = normalized @ normalized.t()
    a[a < threshold] = 0
    cuda_reciprocal = (torch.tensor(1.0, dtype=torch.float32) / torch.tensor(tau, dtype=torch.float32)).item()
    a = a * cuda_reciprocal  # the released `a / temperature`, as CUDA computes it
    a[abs(a) < 1e-6] = -5000
    a = torch.nn.functional.softmax(a, dim=1)
    degree = torch.sum(a > 0, dim=1)
    a = torch.matrix_power(a, iterations)
    w = torch.norm(feature, dim=-1).view(1, -1).to(dtype=a.dtype)
    result = (w @ a) / degree
    return result[0].float()


def reference_released_fp16_select(x: Tensor, ratio: float, **kwargs: float) -> Tensor:
    scores = reference_released_fp16_scores(x, **kwargs)
    k = int(ratio * x.shape[0])
    return torch.sort(scores, descending=True, stable=True).indices[:k].sort().values


def reference_released_fp16_llava_next(
    x: Tensor, base: int, rows: int, cols: int, ratio: float, **kwargs: float
) -> Tensor:
    """The released LLaVA-NeXT grouping in fp16: base and grid apart, grid count ``int(ratio * rows * cols)``."""
    base_scores = reference_released_fp16_scores(x[:base], **kwargs)
    kept_base = torch.sort(base_scores, descending=True, stable=True).indices[: int(ratio * base)]
    packed = x[base:].reshape(rows, cols + 1, -1)
    grid_scores = reference_released_fp16_scores(packed[:, :cols].reshape(rows * cols, -1), **kwargs)
    kept_grid = torch.sort(grid_scores, descending=True, stable=True).indices[: int(ratio * rows * cols)]
    kept_grid_packed = base + (kept_grid // cols) * (cols + 1) + kept_grid % cols
    newlines = base + torch.arange(rows) * (cols + 1) + cols
    return torch.cat([kept_base, kept_grid_packed, newlines]).sort().values
