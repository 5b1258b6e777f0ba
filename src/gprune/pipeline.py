"""The one routine that applies keep decisions to a model call; no other module knows the token layout.

Given a call's ``input_ids`` and the per-image visual tokens an adapter extracted, it

1. locates each image among the placeholder tokens (`locate_images`: image k takes the next n_k
   placeholders in row-major order, the order ``masked_scatter`` fills them);
2. selects the kept tokens of every image with the configured method (`select_images`), each layout
   group scored as its own graph, always-kept tokens (newlines) kept;
3. cuts ``input_ids``, ``attention_mask``, positions and any per-token tensor by the keep mask and
   re-pads the batch on the side it was padded (`prune_sequences`); text and padding tokens are never
   removed, so with nothing pruned the call is unchanged;
4. maps outputs of the shortened call back to the original layout (`restore_layout`).

`prune_call` runs the four steps for an adapter and returns the keyword arguments of the pruned call
together with a `PruneReport` of what was pruned.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from gprune.adapters.base import EncodedImages, ImageTokens, ModelAdapter
from gprune.config import GPruneConfig
from gprune.errors import image_token_mismatch
from gprune.layouts import select_in_layouts
from gprune.methods import get_method
from gprune.validation import Keep
from gprune.video import video_layout

PaddingSide = Literal["left", "right"]


@dataclass(frozen=True)
class ImageSpan:
    """Where one image's placeholder tokens sit: batch row and the (ascending) columns in ``input_ids``."""

    row: int
    columns: Tensor


@dataclass(frozen=True)
class PrunedSequences:
    """A batch after cutting: tensors of length L' and the map back to the original length L.

    `source_index` (B, L') holds the original column of every new column, -1 for padding added when
    re-padding; `keep_mask` (B, L) marks the original tokens that were kept (all text and padding).
    """

    input_ids: Tensor
    attention_mask: Tensor
    position_ids: Tensor
    per_token: dict[str, Tensor]
    source_index: Tensor
    keep_mask: Tensor
    padding_side: PaddingSide


@dataclass(frozen=True)
class ImageReport:
    """What happened to one image (or video, by `kind`): its batch row, visual tokens before and after,
    kept indices (ascending, into the image's packed tokens)."""

    batch_index: int
    tokens_before: int
    tokens_after: int
    kept_indices: Tensor
    kind: str = "image"


@dataclass(frozen=True)
class PruneReport:
    """What the last pruned call did, image by image, in placeholder order."""

    images: tuple[ImageReport, ...]
    keep: Keep
    method: str
    positions: str
    selection_seconds: float

    @property
    def tokens_before(self) -> int:
        return sum(r.tokens_before for r in self.images)

    @property
    def tokens_after(self) -> int:
        return sum(r.tokens_after for r in self.images)


@dataclass(frozen=True)
class PrunedCall:
    """Keyword arguments for the original ``forward`` / ``generate``, the cut sequences, and the report."""

    model_kwargs: dict[str, Any]
    sequences: PrunedSequences
    report: PruneReport


def locate_images(
    input_ids: Tensor, image_token_id: int, lengths: Sequence[int], *, kind: str = "image"
) -> list[ImageSpan]:
    """Assign each image (or video: `kind`) its run of placeholder tokens; a count mismatch is an error naming
    both counts, in transformers' wording for that kind."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (batch, length), got {tuple(input_ids.shape)}")
    placeholders = (input_ids == image_token_id).flatten().nonzero().squeeze(1)
    total = int(sum(lengths))
    if placeholders.numel() != total:
        detail = (
            f"{len(lengths)} {kind}(s) of {', '.join(str(n) for n in lengths)} visual tokens, {kind} placeholder "
            f"id {image_token_id}; pass the processor's input_ids together with its pixel values"
        )
        raise image_token_mismatch(placeholders.numel(), total, detail, kind=kind)
    length = input_ids.shape[1]
    spans = []
    for k, flat in enumerate(torch.split(placeholders, [int(n) for n in lengths])):
        rows = flat // length
        if flat.numel() and bool((rows != rows[0]).any()):
            raise ValueError(f"{kind} {k}'s placeholder tokens span several batch rows; the inputs are malformed")
        spans.append(ImageSpan(int(rows[0]), flat % length))
    return spans


def locate_visual_tokens(input_ids: Tensor, adapter: ModelAdapter, items: Sequence[ImageTokens]) -> list[ImageSpan]:
    """`locate_images` for each kind of placeholder: images among image tokens, videos among video tokens."""
    spans: list[ImageSpan | None] = [None] * len(items)
    for kind in ("image", "video"):
        members = [i for i, item in enumerate(items) if item.kind == kind]
        if members:
            found = locate_images(
                input_ids, adapter.placeholder_token_id(kind), [items[i].layout.length for i in members], kind=kind
            )
            for i, span in zip(members, found, strict=True):
                spans[i] = span
    return [span for span in spans if span is not None]


def select_images(images: Sequence[ImageTokens], config: GPruneConfig) -> list[Tensor]:
    """Kept indices (ascending) into each image's or video's packed tokens.

    Images use their adapter's layout and `config.keep`; videos are grouped by `config.video_window`
    (`gprune.video.video_layout`; a video's `always_kept_tail` tokens always kept) and keep
    `config.video_keep` (`keep` when None). Groups of equal size are scored together. A method with a
    ``frame_tokens`` parameter (a temporal one, e.g. "evs") is told each video's tokens per frame (and gets
    None for images).
    """
    kept: list[Tensor | None] = [None] * len(images)
    params = config.selector_params()
    temporal = "frame_tokens" in inspect.signature(get_method(config.method)).parameters
    plain = [i for i, image in enumerate(images) if image.kind != "video"]
    batches: list[tuple[list[int], Keep, Any, dict[str, Any]]] = []
    if plain:
        no_frames = {"frame_tokens": None} if temporal else {}
        batches.append((plain, config.keep, [images[i].layout for i in plain], no_frames))
    video_keep = config.keep if config.video_keep is None else config.video_keep
    by_frame: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        if image.kind == "video":
            tail = image.always_kept_tail
            by_frame.setdefault(((image.layout.length - tail) // image.frames, tail), []).append(i)
    for (per_frame, tail), members in by_frame.items():
        window = config.video_window
        layouts = [video_layout(images[i].frames, per_frame, window, always_kept_tail=tail) for i in members]
        batches.append((members, video_keep, layouts, {"frame_tokens": per_frame} if temporal else {}))
    for members, keep, layouts, extra in batches:
        chosen = select_in_layouts(
            [images[i].features for i in members], layouts, keep, method=config.method, **params, **extra
        )
        for i, k in zip(members, chosen, strict=True):
            kept[i] = k
    return [k for k in kept if k is not None]


def infer_padding_side(attention_mask: Tensor) -> PaddingSide:
    """'right' when every row starts attended and some row ends padded; otherwise 'left' (what decoding needs)."""
    if bool((attention_mask[:, 0] != 0).all()) and bool((attention_mask[:, -1] == 0).any()):
        return "right"
    return "left"


def prune_sequences(
    input_ids: Tensor,
    attention_mask: Tensor,
    position_ids: Tensor,
    keep_mask: Tensor,
    *,
    per_token: Mapping[str, Tensor] | None = None,
    padding_side: PaddingSide | None = None,
    pad_token_id: int = 0,
) -> PrunedSequences:
    """Keep the columns of `keep_mask` in every row, then re-pad rows to the longest on `padding_side`.

    `position_ids` is (B, L) or (C, B, L) (mRoPE) and already final for the kept tokens; it is gathered,
    not renumbered. Added padding gets id `pad_token_id`, mask 0, position 0.
    """
    b, length = input_ids.shape
    if tuple(attention_mask.shape) != (b, length) or tuple(keep_mask.shape) != (b, length):
        raise ValueError(
            f"input_ids {tuple(input_ids.shape)}, attention_mask {tuple(attention_mask.shape)} and keep mask "
            f"{tuple(keep_mask.shape)} must have the same (batch, length)"
        )
    if position_ids.shape[-2:] != (b, length):
        raise ValueError(f"position_ids {tuple(position_ids.shape)} must end in (batch, length) = {(b, length)}")
    side = padding_side or infer_padding_side(attention_mask)
    keep_mask = keep_mask.to(input_ids.device)
    kept_per_row = keep_mask.sum(1)
    new_length = int(kept_per_row.max()) if b else 0
    offset = (new_length - kept_per_row) if side == "left" else torch.zeros_like(kept_per_row)
    rank = keep_mask.long().cumsum(1) - 1 + offset.unsqueeze(1)
    rows, cols = keep_mask.nonzero(as_tuple=True)
    source = torch.full((b, new_length), -1, dtype=torch.long, device=input_ids.device)
    source[rows, rank[rows, cols]] = cols
    valid = source >= 0
    index = source.clamp_min(0)

    def cut(t: Tensor, fill: int) -> Tensor:
        idx = index.to(t.device).expand(*t.shape[:-2], b, new_length)
        return t.gather(-1, idx).masked_fill(~valid.to(t.device), fill)

    return PrunedSequences(
        input_ids=cut(input_ids, pad_token_id),
        attention_mask=cut(attention_mask, 0),
        position_ids=cut(position_ids, 0),
        per_token={k: cut(v, 0) for k, v in (per_token or {}).items()},
        source_index=source,
        keep_mask=keep_mask,
        padding_side=side,
    )


def cut_columns(values: Tensor, pruned: PrunedSequences) -> Tensor:
    """(B, L, ...) values of the original call, cut to the (B, L', ...) pruned batch (zeros where re-padded)."""
    if values.shape[:2] != pruned.keep_mask.shape:
        raise ValueError(
            f"values of shape {tuple(values.shape)} do not match the batch {tuple(pruned.keep_mask.shape)}"
        )
    source = pruned.source_index.to(values.device)
    trailing = [1] * (values.dim() - 2)
    index = source.clamp_min(0).view(*source.shape, *trailing).expand(*source.shape, *values.shape[2:])
    return values.gather(1, index).masked_fill((source < 0).view(*source.shape, *trailing), 0)


def restore_layout(values: Tensor, pruned: PrunedSequences) -> Tensor:
    """Map (B, L', ...) outputs of the pruned call to (B, L, ...) in the original token layout.

    A kept token gets its own value. A pruned token gets the value of the nearest kept token before it
    in its row (for logits: what the pruned model predicts next at that point, so shifted next-token
    scoring of the text lines up exactly); if none precedes it, the first kept token's.
    """
    b, length = pruned.keep_mask.shape
    if values.shape[:2] != pruned.source_index.shape:
        raise ValueError(
            f"values of shape {tuple(values.shape)} do not match the pruned batch {tuple(pruned.source_index.shape)}"
        )
    device = pruned.source_index.device
    new_col = torch.full((b, length), -1, dtype=torch.long, device=device)
    rows, new_cols = (pruned.source_index >= 0).nonzero(as_tuple=True)
    new_col[rows, pruned.source_index[rows, new_cols]] = new_cols
    columns = torch.arange(length, device=device).expand(b, length)
    last_kept = torch.where(pruned.keep_mask, columns, -1).cummax(dim=1).values
    first_kept = pruned.keep_mask.long().argmax(dim=1, keepdim=True).expand(b, length)
    src = new_col.gather(1, torch.where(last_kept >= 0, last_kept, first_kept))
    index = src.to(values.device).view(b, length, *([1] * (values.dim() - 2))).expand(b, length, *values.shape[2:])
    return values.gather(1, index)


def packing_positions(position_ids: Tensor) -> Tensor | None:
    """The 1-D positions transformers reads packed sequences from: (B, L) as is, row 0 of mRoPE's (4, B, L)."""
    if position_ids.dim() in (1, 2):
        return position_ids
    if position_ids.dim() == 3 and position_ids.shape[0] == 4:
        return position_ids[0]
    return None  # (3, B, L) mRoPE: transformers never reads packing from these


def packed_segments(inputs: Mapping[str, Any]) -> Tensor | None:
    """(B, L) index of the packed sequence each token belongs to, or None when the call is not packed.

    transformers reads a call with ``position_ids`` and no ``attention_mask`` as several sequences packed
    in a row ("padding-free" inputs), a new one starting wherever the positions do not step by one.
    """
    positions = inputs.get("position_ids")
    ids = inputs.get("input_ids")
    if inputs.get("attention_mask") is not None or not isinstance(positions, Tensor) or not isinstance(ids, Tensor):
        return None
    text = packing_positions(positions)
    if text is None:
        return None
    text = text.expand(ids.shape).to(ids.device)
    segments = (text.diff(dim=-1, prepend=text[:, :1] - 1) != 1).long().cumsum(-1)
    return segments if bool((segments[:, -1] > 0).any()) else None


def unpack_segments(
    input_ids: Tensor, position_ids: Tensor, segments: Tensor, per_token: Mapping[str, Tensor], pad_token_id: int = 0
) -> PrunedSequences:
    """One right-padded row per packed sequence (with a 2-D mask), so each sequence attends only to itself."""
    counts = segments[:, -1] + 1
    rows = torch.arange(segments.shape[0], device=segments.device).repeat_interleave(counts)
    starts = torch.cumsum(counts, 0) - counts
    index = torch.arange(rows.numel(), device=segments.device) - starts.repeat_interleave(counts)
    member = segments[rows] == index.unsqueeze(1)
    positions = _expand_positions(position_ids, *segments.shape)
    return prune_sequences(
        input_ids[rows],
        torch.ones_like(member, dtype=torch.long),
        positions[..., rows.to(positions.device), :],
        member,
        per_token={k: v[rows.to(v.device)] for k, v in per_token.items()},
        padding_side="right",
        pad_token_id=pad_token_id,
    )


def repack_segments(values: Tensor, unpacked: PrunedSequences, segments: Tensor) -> Tensor:
    """(S, L', ...) outputs of the unpacked rows back to the packed (B, L, ...) layout."""
    counts = segments[:, -1] + 1
    row = (torch.cumsum(counts, 0) - counts).unsqueeze(1) + segments  # (B, L): the unpacked row of each token
    restored = restore_layout(values, unpacked)
    columns = torch.arange(segments.shape[1], device=segments.device).expand_as(segments)
    return restored[row.to(restored.device), columns.to(restored.device)]


def _expand_positions(position_ids: Tensor, batch: int, length: int) -> Tensor:
    if position_ids.shape[-1] != length:
        raise ValueError(f"position_ids {tuple(position_ids.shape)} do not match the sequence length {length}")
    if position_ids.dim() == 1:
        position_ids = position_ids.unsqueeze(0)
    return position_ids.expand(*position_ids.shape[:-2], batch, length)


def prune_call(
    adapter: ModelAdapter, inputs: Mapping[str, Any], config: GPruneConfig, *, for_generate: bool
) -> PrunedCall:
    """Select visual tokens for one call's inputs and build the keyword arguments of the pruned call.

    `inputs` are the call's keyword arguments (``input_ids`` required, the adapter's image inputs
    present). The returned ``model_kwargs`` replace ``input_ids``, ``attention_mask``, ``position_ids``,
    the per-token tensors and the image inputs; everything else in `inputs` is the caller's to pass on.
    """
    input_ids = inputs.get("input_ids")
    embeds = inputs.get("inputs_embeds")
    had_ids = isinstance(input_ids, Tensor)
    if not had_ids:
        if not isinstance(embeds, Tensor):
            raise ValueError("pruning needs input_ids (batch, length) or inputs_embeds (batch, length, hidden)")
        # The adapter places images and markers by token id: recover them from the embeddings.
        inputs = {**inputs, "input_ids": adapter.token_ids(embeds)}
        input_ids = inputs["input_ids"]
    b, length = input_ids.shape
    attention_mask = inputs.get("attention_mask")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be 2-D (batch, length), got shape {tuple(attention_mask.shape)}")

    encoded: EncodedImages = adapter.encode_images(inputs)
    spans = locate_visual_tokens(input_ids, adapter, encoded.images)
    start = time.perf_counter()
    kept = select_images(encoded.images, config)
    seconds = time.perf_counter() - start

    keep_mask = torch.ones(b, length, dtype=torch.bool, device=input_ids.device)
    for span, k in zip(spans, kept, strict=True):
        columns = span.columns.to(input_ids.device)
        keep_mask[span.row, columns] = False
        keep_mask[span.row, columns[k.to(input_ids.device)]] = True

    if inputs.get("position_ids") is not None:
        positions = _expand_positions(inputs["position_ids"], b, length)
    else:
        positions = adapter.position_ids(input_ids, attention_mask, inputs, for_generate=for_generate)
    if config.positions == "compact":
        positions = adapter.compact_positions(positions, keep_mask)

    per_token = {k: inputs[k] for k in adapter.per_token_keys if isinstance(inputs.get(k), Tensor)}
    pad_id = getattr(getattr(adapter.model, "generation_config", None), "pad_token_id", None)
    pad_id = pad_id if isinstance(pad_id, int) else 0
    sequences = prune_sequences(
        input_ids, attention_mask, positions, keep_mask, per_token=per_token, pad_token_id=pad_id
    )
    # A call made with embeddings goes on with the kept embeddings (and ids only if it also had them).
    tokens = {"input_ids": sequences.input_ids} if had_ids else {}
    if isinstance(embeds, Tensor):
        tokens["inputs_embeds"] = cut_columns(embeds, sequences)
    model_kwargs: dict[str, Any] = {
        **tokens,
        "attention_mask": sequences.attention_mask,
        "position_ids": sequences.position_ids,
        **sequences.per_token,
        **adapter.model_kwargs(encoded, kept),
    }
    model_kwargs = adapter.finalize(model_kwargs, sequences)
    report = PruneReport(
        images=tuple(
            ImageReport(span.row, img.layout.length, int(k.numel()), k.cpu(), img.kind)
            for span, img, k in zip(spans, encoded.images, kept, strict=True)
        ),
        keep=config.keep,
        method=config.method,
        positions=config.positions,
        selection_seconds=seconds,
    )
    return PrunedCall(model_kwargs, sequences, report)
