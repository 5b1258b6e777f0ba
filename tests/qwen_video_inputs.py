"""Qwen-VL prompts with images and videos built by hand as the processors would (no torchvision).

The image-only test processor refuses video pads in its text, so a prompt is assembled here: images go
through the family's PIL image processor, videos through `gprune.testing.qwen.video_inputs`, the text
(with each image's and video's placeholder run written out) through the tokenizer; ``mm_token_type_ids``
marks image pads 1 and video pads 2, as the processor does. Batches are padded on the left or right.
"""

from __future__ import annotations

from typing import Any

import torch

from gprune.testing.qwen import IMAGE_PAD, VISION_END, VISION_START, TinyModel, video_inputs


def sample(tiny: TinyModel, parts: list[Any]) -> dict[str, Any]:
    """One prompt from parts: text (str), ("image", PIL image) or ("video", frames (T, H, W, 3) uint8)."""
    text, tensors = "", {"pixel_values": [], "image_grid_thw": [], "pixel_values_videos": [], "video_grid_thw": [],
                         "second_per_grid_ts": []}
    for part in parts:
        if isinstance(part, str):
            text += part
        elif part[0] == "image":
            out = tiny.processor.image_processor(images=[part[1]], return_tensors="pt")
            text += VISION_START + IMAGE_PAD * int(out["image_grid_thw"].prod() // 4) + VISION_END
            tensors["pixel_values"].append(out["pixel_values"])
            tensors["image_grid_thw"].append(out["image_grid_thw"])
        else:
            video_text, video = video_inputs(tiny.model, tiny.processor.image_processor, part[1])
            text += video_text
            for key, value in video.items():
                tensors[key].append(value)
    ids = tiny.processor.tokenizer(text, return_tensors="pt")["input_ids"][0]
    config = tiny.model.config
    types = (ids == config.image_token_id).long() + 2 * (ids == config.video_token_id).long()
    return {"input_ids": ids, "mm_token_type_ids": types, **tensors}


def batch(tiny: TinyModel, samples: list[dict[str, Any]], side: str = "left") -> dict[str, torch.Tensor]:
    """Pad `samples` to one batch on `side`; visual tensors concatenated in prompt order."""
    length = max(s["input_ids"].numel() for s in samples)
    pad = tiny.processor.tokenizer.pad_token_id
    rows: dict[str, list[torch.Tensor]] = {"input_ids": [], "attention_mask": [], "mm_token_type_ids": []}
    for s in samples:
        n = s["input_ids"].numel()
        fill = length - n

        def padded(t: torch.Tensor, value: int, fill: int = fill) -> torch.Tensor:
            extra = torch.full((fill,), value, dtype=t.dtype)
            return torch.cat([extra, t] if side == "left" else [t, extra])

        rows["input_ids"].append(padded(s["input_ids"], pad))
        rows["attention_mask"].append(padded(torch.ones(n, dtype=torch.long), 0))
        rows["mm_token_type_ids"].append(padded(s["mm_token_type_ids"], 0))
    out = {k: torch.stack(v) for k, v in rows.items()}
    for key in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts"):
        parts = [t for s in samples for t in s[key]]
        if parts:
            out[key] = torch.cat(parts)
    return out
