"""Qwen-VL references built without the adapter: which prompt columns stay, their mRoPE positions, and the
encoder's output cut to the kept tokens. Shared by the image and the video parity tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

GRID_KEYS = ("image_grid_thw", "video_grid_thw", "second_per_grid_ts")


def keep_mask_from_report(inputs: Any, report: Any, placeholder_ids: Mapping[str, int]) -> torch.Tensor:
    """(B, L) kept columns: each reported item (image or video, by kind) takes its placeholder run of its
    batch row in order; text and padding stay as the attention mask says."""
    ids = inputs["input_ids"]
    keep = inputs["attention_mask"].bool().clone()
    for kind, token in placeholder_ids.items():
        columns = {r: (ids[r] == token).nonzero().flatten().tolist() for r in range(ids.shape[0])}
        cursor = dict.fromkeys(columns, 0)
        for item in (r for r in report.images if r.kind == kind):
            row = item.batch_index
            mine = columns[row][cursor[row] : cursor[row] + item.tokens_before]
            cursor[row] += item.tokens_before
            kept = set(item.kept_indices.tolist())
            for i, column in enumerate(mine):
                keep[row, column] = i in kept
    return keep


def reference_positions(model: Any, inputs: Any, keep_mask: torch.Tensor, compact: bool) -> list[torch.Tensor]:
    """Per sample, the (3, n_kept) positions of the kept tokens: the model's own `get_rope_index` on the
    unpruned prompt, columns gathered; `compact` replaces every value by its rank among those still in use."""
    grids = {k: inputs[k] for k in GRID_KEYS if k in inputs}
    mrope, _ = model.model.get_rope_index(
        inputs["input_ids"], inputs["mm_token_type_ids"], attention_mask=inputs["attention_mask"], **grids
    )
    out = []
    for b in range(keep_mask.shape[0]):
        kept = mrope[:, b, keep_mask[b]]
        if compact:
            used = sorted({int(v) for v in kept.flatten()})
            rank = {v: used[0] + i for i, v in enumerate(used)}
            kept = torch.tensor([[rank[int(v)] for v in row] for row in kept])
        out.append(kept)
    return out


def cut_encoder_output(model: Any, pixel_values: torch.Tensor, grid: torch.Tensor, kept: Sequence[torch.Tensor]) -> Any:
    """The vision tower's output for these images or videos, each cut to its kept tokens (DeepStack too)."""
    with torch.no_grad():
        full = model.model.get_image_features(pixel_values, grid, return_dict=True)
    fields = {"pooler_output": tuple(f[k] for f, k in zip(full.pooler_output, kept, strict=True))}
    if getattr(full, "deepstack_features", None) is not None:
        fields["deepstack_features"] = [
            tuple(f[k] for f, k in zip(layer, kept, strict=True)) for layer in full.deepstack_features
        ]
    return type(full)(**fields)
