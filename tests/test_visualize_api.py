"""The Python API of `gprune.visualize`: arrays, overlays, flow maps, features, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gprune
from gprune.errors import UserError
from gprune.layouts import kept_token_count
from gprune.visualize import figure_size_px, plot_pruning, visualize_pruning
from gprune.visualize.geometry import NEWLINE, Packing, vit_geometry
from gprune.visualize.pixels import pixel_features
from gprune.visualize.render import DIM, OUTLINE, display_size

COFFEE = Path(gprune.__file__).parent / "assets" / "coffee.jpg"


@pytest.fixture(scope="module")
def coffee_view():
    return visualize_pruning(COFFEE, keep=0.25)


def test_view_arrays_are_consistent(coffee_view) -> None:
    v = coffee_view
    n = v.geometry.num_tokens
    assert v.photo.shape == (400, 600, 3) and v.photo.dtype == np.uint8
    assert v.features.shape[0] == n and v.kept.shape == (n,) and v.scores.shape == (n,)
    assert v.flow.shape == (gprune.GPruneConfig().iterations + 1, n)
    assert int(v.kept.sum()) == kept_token_count(v.geometry.layout, 0.25)
    newline = v.geometry.kind == NEWLINE
    assert v.kept[newline].all() and np.isnan(v.scores[newline]).all() and np.isnan(v.flow[:, newline]).all()
    for g, group in enumerate(v.geometry.layout.groups):
        idx = group.numpy()
        x = v.features[group]
        np.testing.assert_allclose(v.scores[idx], gprune.graph_scores(x).double().numpy(), rtol=1e-6)
        # G-Prune keeps exactly the top-k of the scores the figure shows, in each group
        k = int(v.kept[idx].sum())
        top = np.sort(torch.argsort(torch.from_numpy(v.scores[idx]), descending=True, stable=True)[:k].numpy())
        assert np.array_equal(np.flatnonzero(v.kept[idx]), top), v.group_names[g]


def test_kept_tokens_spread_over_cup_and_background(coffee_view) -> None:
    """The paper's point, on the bundled photo with pixel features: subject and background both survive."""
    v = coffee_view
    for g in range(len(v.group_names)):
        idx = v.group_tokens(g)
        boxes, kept = v.geometry.boxes[idx], v.kept[idx]
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        cells = np.zeros((3, 3), dtype=int)
        np.add.at(
            cells, (np.minimum(cy[kept] * 3 // 400, 2).astype(int), np.minimum(cx[kept] * 3 // 600, 2).astype(int)), 1
        )
        assert (cells > 0).all(), cells  # every third of the photo, both ways, keeps something
        cup = (cx > 175) & (cx < 410) & (cy > 20) & (cy < 300)  # the cup's body and rim, by eye
        assert (kept & cup).sum() >= 0.15 * kept.sum()
        assert (kept & ~cup).sum() >= 0.3 * kept.sum()


def test_overlay_dims_pruned_and_outlines_kept(coffee_view) -> None:
    v = coffee_view
    h, w = display_size((400, 600), 300)
    assert (h, w) == (200, 300)
    photo = np.asarray(Image.fromarray(v.photo).resize((w, h), Image.Resampling.BICUBIC)).astype(float)
    for g in range(2):
        labels = v.labels(g, 300)
        over = v.overlay(g, 300)
        assert over.shape == (h, w, 3) and over.dtype == np.uint8
        covered = labels >= 0
        kept_px = covered & v.kept[np.where(covered, labels, 0)]
        np.testing.assert_allclose(over[~kept_px], photo[~kept_px] * DIM, atol=0.51)
        outline = (over == OUTLINE).all(axis=-1)
        assert outline[kept_px].mean() > 0.05 and not outline[~kept_px].any()
        untouched = kept_px & ~outline
        np.testing.assert_allclose(over[untouched], photo[untouched], atol=0.5)
    assert (v.labels(0, 300) >= 0).all()  # the base view covers the whole photo


def test_flow_and_rank_maps(coffee_view) -> None:
    v = coffee_view
    m = v.flow_map(1, 0, 200)
    assert m.shape == display_size((400, 600), 200)
    labels = v.labels(1, 200)
    np.testing.assert_array_equal(m[labels >= 0], v.flow[0][labels[labels >= 0]])
    ranks = v.score_rank_map(0, 200)
    assert np.nanmin(ranks) == 0.0 and np.nanmax(ranks) == 1.0
    with pytest.raises(ValueError, match="step"):
        v.flow_map(0, 99)
    with pytest.raises(ValueError, match="group"):
        v.overlay(2)


def test_figure_has_the_promised_size(coffee_view) -> None:
    fig = plot_pruning(coffee_view, width_px=800, dpi=100)
    w, h = figure_size_px(coffee_view, 800)
    assert (round(fig.get_figwidth() * 100), round(fig.get_figheight() * 100)) == (w, h)
    # 2 overlays + 2 rows of (T + 1) flow maps, a score-rank map and a colour bar
    assert sum(len(sub.axes) for sub in fig.subfigs) == 2 + 2 * (coffee_view.flow.shape[0] + 2)


def test_figure_explains_its_colours(coffee_view) -> None:
    from gprune.visualize.plot import FLOW_LABEL, KEPT_LABEL, PRUNED_LABEL, RANK_TITLE
    from gprune.visualize.render import legend_swatches

    fig = plot_pruning(coffee_view, width_px=1800, dpi=100)
    header, *flow_rows = fig.subfigs
    (legend,) = header.legends
    assert [t.get_text() for t in legend.get_texts()] == [KEPT_LABEL, PRUNED_LABEL] == [
        "kept (gold outline)",
        "pruned (dimmed to 30%)",
    ]
    kept, pruned = legend.get_patches()
    swatch = legend_swatches()
    assert tuple(kept.get_edgecolor()[:3]) == pytest.approx(tuple(OUTLINE / 255))
    assert tuple(pruned.get_facecolor()[:3]) == pytest.approx(swatch["pruned"]["face"])
    assert swatch["pruned"]["face"][0] == pytest.approx(swatch["kept"]["face"][0] * DIM)
    for row in flow_rows:
        bars = [ax for ax in row.axes if ax.get_ylabel() == FLOW_LABEL]
        assert len(bars) == 1  # one colour bar per flow row, labelled
        assert [t.get_text() for t in bars[0].get_yticklabels()] == ["0", "max"]
        assert sum(ax.get_title().endswith(RANK_TITLE) for ax in row.axes) == 1


def test_pixel_descriptor_properties() -> None:
    geo = vit_geometry((56, 56), crop_size=28, patch_size=14)
    views = torch.randn(1, 3, 28, 28)
    f = pixel_features(views, geo, 14)
    assert f.shape == (4, 3 * 14 * 14 + 5)
    texture = f[:, : 3 * 196].reshape(4, 3, 196)
    torch.testing.assert_close(texture.mean(-1), torch.zeros(4, 3), atol=1e-6, rtol=0)
    # colour weight 1 and no position: the same cosine geometry as the raw pixels
    raw = views.reshape(3, 2, 14, 2, 14).permute(1, 3, 0, 2, 4).reshape(4, -1)
    plain = pixel_features(views, geo, 14, colour_weight=1.0, position_weight=0.0)
    cos = torch.nn.functional.normalize(plain, dim=-1) @ torch.nn.functional.normalize(plain, dim=-1).T
    cos_raw = torch.nn.functional.normalize(raw, dim=-1) @ torch.nn.functional.normalize(raw, dim=-1).T
    torch.testing.assert_close(cos, cos_raw, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="colour_weight"):
        pixel_features(views, geo, 14, colour_weight=-1.0)


def test_other_methods_and_vit_packing() -> None:
    photo = np.random.default_rng(0).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    for method in gprune.available_methods():
        v = visualize_pruning(photo, packing="llava", method=method, keep=0.1, iterations=2)
        expected = gprune.kept_token_count(gprune.single_group_layout(576), 0.1, method=method)  # 57; 58 rounded
        assert v.group_names == ("image",) and int(v.kept.sum()) == expected, method
        assert v.flow.shape == (3, 576)


def test_model_features_are_the_models_own() -> None:
    from gprune.testing.llava import tiny_llava_next

    tiny = tiny_llava_next()
    photo = Image.open(COFFEE)
    v = visualize_pruning(photo, features="model", model=tiny.model, image_processor=tiny.processor.image_processor)
    inputs = tiny.processor(text=tiny.prompt("hi"), images=[photo], return_tensors="pt")
    with torch.no_grad():
        packed = tiny.model.model.get_image_features(
            pixel_values=inputs["pixel_values"], image_sizes=inputs["image_sizes"]
        ).pooler_output[0]
    torch.testing.assert_close(v.features, packed.float())
    assert int((inputs["input_ids"] == tiny.model.config.image_token_id).sum()) == v.geometry.num_tokens
    assert v.geometry.grid_shape is not None and v.group_names == ("base", "grid")
    # with a model, the packing comes from its config (32 px tiles of 8 px patches)
    assert Packing.from_model_config(tiny.model.config).tile_size == 32
    with pytest.raises(UserError, match="either a model or a packing"):
        visualize_pruning(photo, model=tiny.model, packing="llava")


def test_bad_input_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="image file not found"):
        visualize_pruning(tmp_path / "missing.jpg")
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("hello")
    with pytest.raises(UserError, match="cannot read image"):
        visualize_pruning(not_image)
    with pytest.raises(UserError, match=r"\(H, W, 3\) uint8"):
        visualize_pruning(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(UserError, match="needs a model"):
        visualize_pruning(COFFEE, features="model")
    with pytest.raises(UserError, match="features must be"):
        visualize_pruning(COFFEE, features="clip")
    with pytest.raises(UserError, match="unknown packing"):
        visualize_pruning(COFFEE, packing="qwen")
    with pytest.raises(ValueError, match="keep"):
        visualize_pruning(COFFEE, keep=1.5)


def test_importing_gprune_does_not_import_matplotlib() -> None:
    code = (
        "import sys, gprune, gprune.visualize, gprune.cli; gprune.cli.build_parser(); "
        "print('matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_matplotlib_names_the_extra(coffee_view, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ModuleNotFoundError
    with pytest.raises(UserError, match=r"gprune\[viz\]"):
        plot_pruning(coffee_view)


def test_token_budget_counts_newlines() -> None:
    photo = np.random.default_rng(0).integers(0, 256, (100, 300, 3), dtype=np.uint8)
    v = visualize_pruning(photo, keep=300)
    counts = v.kept_counts()
    assert counts["total"] == 300 == counts["base"] + counts["grid"] + counts["newline"]
    assert counts["newline"] == v.geometry.grid_shape[0]
