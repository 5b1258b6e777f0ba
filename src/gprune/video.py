"""How a video's visual tokens group into graphs, and how many are kept: pure functions of shape and config.

A video enters the LLM as `frames` consecutive frames of `tokens_per_frame` tokens each (for Qwen-VL a
"frame" is one temporal patch, two input frames merged, of ``(h / merge) * (w / merge)`` tokens). Two
groupings are offered, both through the ordinary `TokenLayout` and method registry:

- ``window=1`` (default): one graph per frame, as an image. Every frame keeps the same share, so the
  kept tokens spread evenly over time; no frame can take another's budget.
- ``window=k > 1``: one spatio-temporal graph over each run of k frames (the last run may be shorter);
  ``window=0``: the whole video as one graph. The graph links any two tokens of the window whose cosine
  similarity reaches the threshold, within a frame and across frames alike. A static background repeats
  at the same place in every frame, so its tokens form one dense cluster across the window: propagation
  gathers their information and the score divides by the cluster's large degree, so few of them are kept,
  while tokens that change (motion, new content) have few look-alikes and keep their information. The
  window bounds how far apart two linked frames may be (and the graph's size: a window of N tokens
  scores in N^2 time; beyond `gprune.graph_blocks.MEMORY_BUDGET_BYTES` it is scored in bounded memory).

Kept counts follow `gprune.layouts.group_keep_counts`: a ratio keeps ``int(ratio * n)`` of each graph (at
least one), an int is a budget for the whole video split across its graphs in proportion to their sizes.
"""

from __future__ import annotations

import torch

from gprune.layouts import TokenLayout, kept_token_count
from gprune.validation import Keep


def check_window(window: int) -> int:
    """`window` must be an int >= 0 (0: the whole video as one graph)."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 0:
        raise ValueError(f"video_window must be an int >= 0 (frames per graph; 0 = the whole video), got {window!r}")
    return window


def video_layout(frames: int, tokens_per_frame: int, window: int = 1) -> TokenLayout:
    """Layout of one video: `frames` frames of `tokens_per_frame` tokens, one graph per `window` frames."""
    for name, value in (("frames", frames), ("tokens_per_frame", tokens_per_frame)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    window = check_window(window) or frames
    step = window * tokens_per_frame
    length = frames * tokens_per_frame
    groups = tuple(torch.arange(start, min(start + step, length)) for start in range(0, length, step))
    return TokenLayout(length, groups, torch.empty(0, dtype=torch.long))


def kept_video_tokens(
    frames: int, tokens_per_frame: int, keep: Keep, *, window: int = 1, method: str = "gprune"
) -> int:
    """Visual tokens one video keeps: a pure function of its shape, `keep`, `window` and `method`."""
    return kept_token_count(video_layout(frames, tokens_per_frame, window), keep, method=method)
