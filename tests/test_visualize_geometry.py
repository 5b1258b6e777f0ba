"""Token-to-pixel geometry reproduces transformers' LLaVA-1.5 and LLaVA-NeXT packing exactly.

The oracles are transformers' own code: `LlavaNextModel.pack_image_features` (packed order and count),
`LlavaNextProcessor` (number of image tokens it inserts) and the PIL image processors (which pixels
each patch holds). None of them is used by the geometry code under test except `select_best_resolution`.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlavaNextProcessor, PreTrainedTokenizerFast
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
from transformers.models.llava_next.modeling_llava_next import LlavaNextModel, image_size_to_num_patches

from gprune.adapters.llava import LlavaNextAdapter
from gprune.visualize.geometry import (
    BASE,
    GRID,
    LLAVA_NEXT_PINPOINTS,
    NEWLINE,
    Packing,
    anyres_geometry,
    vit_geometry,
)

PINPOINTS = [list(p) for p in LLAVA_NEXT_PINPOINTS]
SIZES = [(400, 600), (600, 400), (337, 1000), (1000, 337), (500, 500), (100, 900), (224, 224), (768, 1366),
         (50, 60), (2000, 300), (333, 667), (671, 673)]  # fmt: skip
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])


def model_packing(image_size: tuple[int, int], pinpoints: list[list[int]], tile: int, patch: int) -> np.ndarray:
    """(tile index, row, col) of every packed token, as transformers' pack_image_features orders them.

    pack_image_features reads only ``self.config``; each patch's "feature" is its own (tile, row, col).
    """
    side = tile // patch
    n_tiles = image_size_to_num_patches(list(image_size), pinpoints, tile)
    t, r, c = torch.meshgrid(torch.arange(n_tiles), torch.arange(side), torch.arange(side), indexing="ij")
    feats = torch.stack([t, r, c], dim=-1).reshape(n_tiles, side * side, 3).float()
    owner = SimpleNamespace(
        config=SimpleNamespace(
            vision_config=SimpleNamespace(image_size=tile, patch_size=patch), image_grid_pinpoints=pinpoints
        )
    )
    packed, _ = LlavaNextModel.pack_image_features(
        owner, [feats], torch.tensor([image_size]), "default", image_newline=torch.full((3,), -1.0)
    )
    return packed[0].long().numpy()


@pytest.mark.parametrize("size", SIZES)
def test_anyres_order_and_count_match_pack_image_features(size: tuple[int, int]) -> None:
    geo = anyres_geometry(size)
    assert np.array_equal(geo.source, model_packing(size, PINPOINTS, 336, 14))
    assert geo.layout.length == geo.num_tokens == len(geo.boxes)


@pytest.mark.parametrize(
    ("size", "pinpoints", "tile", "patch"),
    [
        ((40, 70), [[32, 64], [64, 32], [64, 64], [32, 96], [96, 32]], 32, 8),
        ((90, 30), [[384, 768], [768, 384]], 384, 16),
    ],
)
def test_anyres_other_tilings_match_pack_image_features(size, pinpoints, tile, patch) -> None:
    geo = anyres_geometry(size, grid_pinpoints=pinpoints, tile_size=tile, patch_size=patch)
    assert np.array_equal(geo.source, model_packing(size, pinpoints, tile, patch))


def byte_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<unk>": 0, "<image>": 1, **{chr(c): 2 + i for i, c in enumerate(range(32, 127))}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return tok


def test_token_count_equals_what_the_processor_inserts() -> None:
    processor = LlavaNextProcessor(
        image_processor=LlavaNextImageProcessorPil(
            size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, image_grid_pinpoints=PINPOINTS
        ),
        tokenizer=byte_tokenizer(),
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # llava-v1.6 checkpoints: CLIP's CLS, dropped by "default"
    )
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    config = SimpleNamespace(
        vision_config=SimpleNamespace(image_size=336, patch_size=14), image_grid_pinpoints=PINPOINTS
    )
    for h, w in SIZES[:8]:
        ids = processor(text="a<image>b", images=Image.new("RGB", (w, h)), return_tensors="pt")["input_ids"]
        geo = anyres_geometry((h, w))
        assert int((ids == image_id).sum()) == geo.num_tokens, (h, w)
        # and the pruning pipeline's layout (same rules, from the config) agrees
        layout = LlavaNextAdapter.image_layout(config, (h, w))
        assert all(torch.equal(a, b) for a, b in zip(layout.groups, geo.layout.groups, strict=True))
        assert torch.equal(layout.always_keep, geo.layout.always_keep)


def test_anyres_hand_computed_600x400_photo() -> None:
    # 400 x 600 (h, w): best canvas 672 x 672. transformers resizes the photo to ceil(400 * (672 / 600)) =
    # ceil(448.00000000000006) = 449 rows (a float quirk, checked on the processor's output), pasted at
    # y = (672 - 449) // 2 = 111. The 48 x 48 feature grid is unpadded to rows 8..39 (computed on the grid:
    # round(400 * 48 / 600) = 32 rows); 576 + 32 * 49 tokens.
    geo = anyres_geometry((400, 600))
    assert geo.grid_shape == (32, 48)
    assert geo.num_tokens == 576 + 32 * 49
    np.testing.assert_allclose(geo.boxes[0], [0, 0, 14 * 600 / 336, 14 * 400 / 336])
    np.testing.assert_allclose(geo.boxes[575], [600 - 14 * 600 / 336, 400 - 14 * 400 / 336, 600, 400])
    first_cell, last_cell = 576, 576 + 31 * 49 + 47
    sy = 400 / 449  # photo pixels per resized row
    np.testing.assert_allclose(geo.boxes[first_cell], [0, (112 - 111) * sy, 12.5, (126 - 111) * sy])
    np.testing.assert_allclose(geo.boxes[last_cell], [600 - 12.5, (546 - 111) * sy, 600, (560 - 111) * sy])
    # grid cell (row 8 of the canvas grid, col 0) is patch (8, 0) of tile 1 (top-left tile)
    assert tuple(geo.source[first_cell]) == (1, 8, 0)
    assert tuple(geo.source[last_cell]) == (4, 39 - 24, 47 - 24)
    assert geo.kind[576 + 48] == NEWLINE and np.isnan(geo.boxes[576 + 48]).all()
    assert (geo.kind[:576] == BASE).all() and (geo.kind[576:] != BASE).all()


@pytest.mark.parametrize("size", SIZES)
def test_each_group_tiles_the_photo(size: tuple[int, int]) -> None:
    """Base boxes tile the whole photo; grid boxes never overlap and stay inside the photo."""
    geo = anyres_geometry(size)
    h, w = size
    for kind in (BASE, GRID):
        boxes = geo.boxes[(geo.kind == kind) & np.isfinite(geo.boxes[:, 0])]
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w + 1e-9).all()
        assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= h + 1e-9).all()
        area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sum()
        assert area <= h * w * (1 + 1e-9)
        if kind == BASE:
            assert area == pytest.approx(h * w)
        else:  # unpadding may drop at most a sliver under one grid cell per side
            cell_h, cell_w = h / geo.grid_shape[0], w / geo.grid_shape[1]
            assert area >= h * w - 2 * (cell_h * w + cell_w * h)


def test_vit_hand_computed_600x400_photo() -> None:
    # 400 x 600: shortest edge to 336 -> 336 x 504, centre crop x from 84: photo x in [100, 500).
    geo = vit_geometry((400, 600))
    assert geo.num_tokens == 576 and geo.layout.length == 576
    np.testing.assert_allclose(geo.boxes[0], [100, 0, 100 + 14 * 600 / 504, 14 * 400 / 336])
    np.testing.assert_allclose(geo.boxes[575], [500 - 14 * 600 / 504, 400 - 14 * 400 / 336, 500, 400])


def block_photo(h: int, w: int, block: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A photo of `block`-pixel squares of random saturated colours, and the per-block colour table."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(-(-h // block), -(-w // block), 3)).astype(np.uint8)
    photo = np.repeat(np.repeat(colours, block, axis=0), block, axis=1)[:h, :w]
    return np.ascontiguousarray(photo), colours


def expected_block_colours(geo, colours: np.ndarray, block: int, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """For tokens whose box (grown by `margin` px) lies inside one block: mask and that block's colour."""
    boxes = geo.boxes
    finite = np.isfinite(boxes[:, 0])
    b = np.where(finite[:, None], boxes, 0.0)
    bx0, by0 = np.floor((b[:, 0] - margin) / block), np.floor((b[:, 1] - margin) / block)
    bx1, by1 = np.floor((b[:, 2] + margin - 1e-9) / block), np.floor((b[:, 3] + margin - 1e-9) / block)
    inside = finite & (bx0 == bx1) & (by0 == by1) & (b[:, 0] >= margin) & (b[:, 1] >= margin)
    inside &= (b[:, 2] <= geo.image_size[1] - margin) & (b[:, 3] <= geo.image_size[0] - margin)
    rows = np.clip(by0, 0, colours.shape[0] - 1).astype(int)
    cols = np.clip(bx0, 0, colours.shape[1] - 1).astype(int)
    return inside, colours[rows, cols].astype(np.float64)


def patch_mean_rgb(views: np.ndarray, geo, patch: int) -> np.ndarray:
    """Mean 0-255 colour of the pixels each token holds, gathered through transformers' packing order."""
    v, _, t, _ = views.shape
    side = t // patch
    means = views.reshape(v, 3, side, patch, side, patch).mean(axis=(3, 5))  # (V, 3, side, side)
    rgb = (means.transpose(0, 2, 3, 1) * CLIP_STD + CLIP_MEAN) * 255.0
    src = model_packing(geo.image_size, PINPOINTS, t, patch) if geo.grid_shape else geo.source
    out = rgb[src[:, 0].clip(0), src[:, 1].clip(0), src[:, 2].clip(0)]
    out[src[:, 0] < 0] = np.nan
    return out


@pytest.mark.parametrize(("size", "block"), [((400, 600), 90), ((500, 230), 80), ((300, 1000), 100)])
def test_anyres_coloured_blocks_land_where_expected(size: tuple[int, int], block: int) -> None:
    h, w = size
    photo, colours = block_photo(h, w, block, seed=h)
    processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, image_grid_pinpoints=PINPOINTS
    )
    views = processor(images=[Image.fromarray(photo)], return_tensors="np")["pixel_values"][0]
    geo = anyres_geometry(size)
    seen = patch_mean_rgb(views, geo, 14)
    # Bicubic resampling blends source pixels within about two output pixels: keep that far from block edges.
    for kind, margin in ((BASE, 2 * max(h, w) / 336 + 1), (GRID, 3.0)):
        inside, expected = expected_block_colours(geo, colours, block, margin)
        inside &= geo.kind == kind
        assert inside.sum() > 0.2 * (geo.kind == kind).sum()  # a real check, not a vacuous one
        err = np.abs(seen[inside] - expected[inside]).max()
        assert err < 4.0, (kind, err)


def test_vit_coloured_blocks_land_where_expected() -> None:
    photo, colours = block_photo(400, 600, 80, seed=1)
    processor = CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    views = processor(images=[Image.fromarray(photo)], return_tensors="np")["pixel_values"]
    geo = vit_geometry((400, 600))
    seen = patch_mean_rgb(views, geo, 14)
    inside, expected = expected_block_colours(geo, colours, 80, margin=4.0)
    assert inside.sum() > 0.2 * 576
    assert np.abs(seen[inside] - expected[inside]).max() < 4.0


def test_packing_from_model_config_and_errors() -> None:
    config = SimpleNamespace(
        model_type="llava_next",
        vision_config=SimpleNamespace(image_size=32, patch_size=8),
        image_grid_pinpoints=[[32, 64], [64, 32]],
    )
    packing = Packing.from_model_config(config)
    assert packing == Packing("anyres", 32, 8, ((32, 64), (64, 32)))
    config.model_type = "qwen2_vl"
    with pytest.raises(ValueError, match="qwen2_vl"):
        Packing.from_model_config(config)
    with pytest.raises(ValueError, match="positive ints"):
        anyres_geometry((0, 10))
    with pytest.raises(ValueError, match="multiple of patch size"):
        vit_geometry((10, 10), crop_size=30, patch_size=14)
    with pytest.raises(ValueError, match="packing kind"):
        Packing("qwen")
