"""The shared compaction routine, checked against plain per-row Python loops (an independent formulation)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gprune.adapters.base import ImageTokens, ModelAdapter
from gprune.config import GPruneConfig
from gprune.layouts import llava_next_layout, select_in_layout, single_group_layout
from gprune.pipeline import (
    infer_padding_side,
    locate_images,
    prune_sequences,
    restore_layout,
    select_images,
)


def loop_prune(ids, mask, pos, keep, side, pad=0):
    """Reference: per row, keep the marked columns in order, pad to the longest row on `side`."""
    rows = []
    for b in range(ids.shape[0]):
        cols = [t for t in range(ids.shape[1]) if keep[b, t]]
        rows.append(cols)
    width = max(len(c) for c in rows)
    out_ids, out_mask, out_pos, out_src = [], [], [], []
    for b, cols in enumerate(rows):
        fill = width - len(cols)
        ids_row = [int(ids[b, t]) for t in cols]
        mask_row = [int(mask[b, t]) for t in cols]
        pos_row = [int(pos[b, t]) for t in cols]
        src_row = list(cols)
        if side == "left":
            ids_row, mask_row, pos_row, src_row = (
                [pad] * fill + ids_row,
                [0] * fill + mask_row,
                [0] * fill + pos_row,
                [-1] * fill + src_row,
            )
        else:
            ids_row, mask_row, pos_row, src_row = (
                ids_row + [pad] * fill,
                mask_row + [0] * fill,
                pos_row + [0] * fill,
                src_row + [-1] * fill,
            )
        out_ids.append(ids_row)
        out_mask.append(mask_row)
        out_pos.append(pos_row)
        out_src.append(src_row)
    return tuple(torch.tensor(x) for x in (out_ids, out_mask, out_pos, out_src))


def loop_restore(values, keep, source):
    """Reference: a kept token takes its own value; a pruned one the last kept value before it (else the first)."""
    b, length = keep.shape
    out = torch.empty(b, length, *values.shape[2:], dtype=values.dtype)
    for r in range(b):
        where = {int(source[r, j]): j for j in range(source.shape[1]) if source[r, j] >= 0}
        kept_cols = [t for t in range(length) if keep[r, t]]
        for t in range(length):
            before = [c for c in kept_cols if c <= t]
            col = before[-1] if before else kept_cols[0]
            out[r, t] = values[r, where[col]]
    return out


@settings(max_examples=60, deadline=None)
@given(
    b=st.integers(1, 4),
    length=st.integers(1, 12),
    side=st.sampled_from(["left", "right"]),
    seed=st.integers(0, 10_000),
)
def test_prune_sequences_and_restore_match_loops(b, length, side, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 100, (b, length), generator=g)
    mask = (torch.rand(b, length, generator=g) > 0.2).long()
    pos = torch.randint(0, 50, (b, length), generator=g)
    keep = torch.rand(b, length, generator=g) > 0.4
    keep[:, 0] = True  # every row keeps something
    got = prune_sequences(ids, mask, pos, keep, padding_side=side, pad_token_id=7)
    want_ids, want_mask, want_pos, want_src = loop_prune(ids, mask, pos, keep, side, pad=7)
    assert torch.equal(got.input_ids, want_ids)
    assert torch.equal(got.attention_mask, want_mask)
    assert torch.equal(got.position_ids, want_pos)
    assert torch.equal(got.source_index, want_src)
    values = torch.randn(b, got.input_ids.shape[1], 3, generator=g)
    assert torch.equal(restore_layout(values, got), loop_restore(values, keep, got.source_index))


def test_mrope_positions_and_per_token_tensors_are_cut_alike():
    ids = torch.arange(12).view(2, 6)
    mask = torch.ones(2, 6, dtype=torch.long)
    pos = torch.arange(36).view(3, 2, 6)
    keep = torch.tensor([[1, 0, 1, 1, 0, 1], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    got = prune_sequences(ids, mask, pos, keep, per_token={"token_type_ids": ids * 10}, padding_side="left")
    assert got.position_ids.shape == (3, 2, 6)
    assert torch.equal(got.position_ids[:, 0, 2:], pos[:, 0][:, keep[0]])
    assert torch.equal(got.per_token["token_type_ids"][0, 2:], ids[0, keep[0]] * 10)
    assert got.attention_mask[0, :2].eq(0).all()


def test_nothing_pruned_is_the_identity():
    ids = torch.randint(0, 9, (3, 7))
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[0, :2] = 0
    pos = torch.arange(7).expand(3, 7)
    got = prune_sequences(ids, mask, pos, torch.ones(3, 7, dtype=torch.bool))
    assert torch.equal(got.input_ids, ids) and torch.equal(got.attention_mask, mask)
    assert torch.equal(got.position_ids, pos)


def test_padding_side_is_inferred_from_the_mask():
    assert infer_padding_side(torch.tensor([[0, 1, 1], [1, 1, 1]])) == "left"
    assert infer_padding_side(torch.tensor([[1, 1, 0], [1, 1, 1]])) == "right"
    assert infer_padding_side(torch.ones(2, 3)) == "left"


def test_locate_images_in_placeholder_order_and_mismatch_error():
    img = 9
    ids = torch.tensor([[1, img, img, 2, img, 3], [img, img, img, 4, 5, 6]])
    spans = locate_images(ids, img, [2, 1, 3])
    assert [(s.row, s.columns.tolist()) for s in spans] == [(0, [1, 2]), (0, [4]), (1, [0, 1, 2])]
    mismatch = "^Image features and image tokens do not match, tokens: 6, features: 5; 2 image.*2, 3 visual tokens"
    with pytest.raises(ValueError, match=mismatch):
        locate_images(ids, img, [2, 3])
    with pytest.raises(ValueError, match="span several batch rows"):
        locate_images(ids, img, [2, 2, 2])


def test_default_compact_positions_renumber_kept_tokens_contiguously():
    class Dummy(ModelAdapter):
        model_types = ("dummy",)

        def encode_images(self, inputs):  # pragma: no cover - not used
            raise NotImplementedError

        def model_kwargs(self, encoded, kept):  # pragma: no cover
            raise NotImplementedError

        @classmethod
        def image_layout(cls, model_config, image_size, **kwargs):  # pragma: no cover
            raise NotImplementedError

    model = torch.nn.Linear(1, 1)
    model.config = None
    adapter = Dummy(model)
    keep = torch.tensor([[1, 1, 0, 0, 1, 1, 0, 1]], dtype=torch.bool)
    pos = torch.arange(8).unsqueeze(0) + 5
    compact = adapter.compact_positions(pos, keep)
    assert compact[keep].tolist() == [5, 6, 7, 8, 9]


def test_select_images_matches_per_image_selection():
    torch.manual_seed(0)
    layouts = [llava_next_layout(16, 4, 5), llava_next_layout(16, 0, 0), single_group_layout(16)]
    images = [ImageTokens(torch.randn(lay.length, 8), lay) for lay in layouts]
    config = GPruneConfig(keep=0.4)
    got = select_images(images, config)
    for image, kept in zip(images, got, strict=True):
        want = select_in_layout(image.features, image.layout, 0.4, **config.selector_params())
        assert torch.equal(kept, want)
