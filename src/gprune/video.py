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

A model may append tokens after the last frame that are not part of any frame: LLaVA-OneVision ends every
video with one learned ``image_newline``. ``always_kept_tail=n`` lays out those n tokens after the frames
as always kept (like LLaVA-NeXT's newline tokens): they are in no graph and every keep setting keeps them.

Kept counts follow `gprune.layouts.group_keep_counts`: a ratio keeps ``int(ratio * n)`` of each graph (at
least one), an int is a budget for the whole video (always-kept tail included) split across its graphs in
proportion to their sizes.
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


def video_layout(frames: int, tokens_per_frame: int, window: int = 1, *, always_kept_tail: int = 0) -> TokenLayout:
    """Layout of one video: `frames` frames of `tokens_per_frame` tokens, one graph per `window` frames, then
    `always_kept_tail` tokens that are always kept (LLaVA-OneVision's closing newline: 1)."""
    for name, value in (("frames", frames), ("tokens_per_frame", tokens_per_frame)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if isinstance(always_kept_tail, bool) or not isinstance(always_kept_tail, int) or always_kept_tail < 0:
        raise ValueError(f"always_kept_tail must be an int >= 0, got {always_kept_tail!r}")
    window = check_window(window) or frames
    step = window * tokens_per_frame
    length = frames * tokens_per_frame
    groups = tuple(torch.arange(start, min(start + step, length)) for start in range(0, length, step))
    return TokenLayout(length + always_kept_tail, groups, torch.arange(length, length + always_kept_tail))


def kept_video_tokens(
    frames: int,
    tokens_per_frame: int,
    keep: Keep,
    *,
    window: int = 1,
    method: str = "gprune",
    always_kept_tail: int = 0,
) -> int:
    """Visual tokens one video keeps (tail included): a pure function of its shape, `keep`, `window` and `method`."""
    layout = video_layout(frames, tokens_per_frame, window, always_kept_tail=always_kept_tail)
    return kept_token_count(layout, keep, method=method)
