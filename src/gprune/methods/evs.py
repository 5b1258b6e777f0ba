"""EVS-style temporal redundancy: drop video tokens too similar to the same position in the previous frame.

The baseline vLLM applies to Qwen-VL videos (Efficient Video Sampling, ``compute_retention_mask`` in
vLLM's ``multimodal/evs.py``): each token's dissimilarity is ``1 - cos(x_t, x_{t-1})`` to the token at the
same spatial position one frame earlier; the first frame has no predecessor and ranks above every other
token (vLLM gives it 255); the most dissimilar tokens are kept. It sees time only, never similarity within
a frame -- the comparison G-Prune's spatio-temporal graph (``video_window`` > 1) is measured against.

It needs the frame length: the pipeline passes ``frame_tokens`` for video groups. Group a video with
``video_window=0`` (the whole video, as vLLM does) or k > 1; with one frame per group (the default
``video_window=1``) or on an image (``frame_tokens=None``) every token is a first-frame token, and EVS keeps
the first `count` tokens in order. Ties go to the lower index, so equal frames keep their earliest copy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gprune.core import top_indices
from gprune.methods import register_method


def temporal_dissimilarity(features: Tensor, frame_tokens: int | None) -> Tensor:
    """(..., N) ``1 - cos`` of each token to the same position one frame earlier; +inf in the first frame."""
    n = features.shape[-2]
    step = n if frame_tokens is None else int(frame_tokens)
    if step < 1:
        raise ValueError(f"frame_tokens must be >= 1, got {frame_tokens!r}")
    score = torch.full(features.shape[:-1], float("inf"), dtype=torch.float32, device=features.device)
    if step < n:
        x = features.float()
        score[..., step:] = 1.0 - torch.nn.functional.cosine_similarity(x[..., step:, :], x[..., :-step, :], dim=-1)
    return score


@register_method("evs")
def select_evs(
    features: Tensor, mask: Tensor, counts: Sequence[int], *, frame_tokens: int | None = None
) -> list[Tensor]:
    """Keep the `counts[b]` valid tokens of item b that changed most since the previous frame (first frame first)."""
    score = temporal_dissimilarity(features, frame_tokens).masked_fill(~mask, float("-inf"))
    return [top_indices(row, k) for row, k in zip(score, counts, strict=True)]
