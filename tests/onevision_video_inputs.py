"""A stand-in for `LlavaOnevisionVideoProcessor`, which needs torchvision (this environment must not install it).

`HandVideoProcessor` does what the real one does by default -- each frame resized to the tower's size (bicubic,
here with PIL), scaled by 1/255 and normalised with the OpenAI CLIP mean and std, stacked as (videos, frames, 3,
H, W) -- with frames given as numpy arrays. Set it as ``processor.video_processor`` of the tiny OneVision
processor, whose own ``<video>`` expansion (frames x pooled tokens + 1 newline) then runs unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from gprune.testing.llava import TILE


class HandVideoProcessor:
    """`LlavaOnevisionVideoProcessor`'s default steps without torchvision (see the module docstring)."""

    def __call__(self, videos: Any, **kwargs: Any) -> BatchFeature:
        mean, std = np.array(OPENAI_CLIP_MEAN), np.array(OPENAI_CLIP_STD)
        out = []
        for video in videos:
            frames = []
            for frame in np.asarray(video):
                resized = np.asarray(Image.fromarray(frame).resize((TILE, TILE), Image.BICUBIC), dtype=np.float64)
                frames.append(torch.from_numpy(((resized / 255 - mean) / std).transpose(2, 0, 1).astype(np.float32)))
            out.append(torch.stack(frames))
        return BatchFeature({"pixel_values_videos": torch.stack(out)})
