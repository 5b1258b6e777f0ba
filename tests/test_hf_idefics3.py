"""Idefics3 and SmolVLM through `gprune.apply`: tiles and global view per image, markers read from input_ids."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import gprune
from gprune.core import select_tokens
from gprune.testing.idefics3 import LONGEST_EDGE, tiny_idefics3, tiny_smolvlm
from hand_built import hand_built_logits
from tiled_checks import check_batch_equals_per_sample, check_keep_one_is_the_identity, greedy

PHOTO = Image.open(gprune.__path__[0] + "/assets/coffee.jpg").convert("RGB")
VIEW = 16  # tokens per tile or global view of the tiny models
SIZES = [(96, 30), (40, 70), (30, 30)]  # (width, height): 1x2 tiles, 2x2, 2x2 (each + global view)


@pytest.fixture(scope="module", params=["idefics3", "smolvlm"])
def tiny(request):
    return tiny_idefics3() if request.param == "idefics3" else tiny_smolvlm()


def encode(tiny, sizes_per_prompt, questions, padding_side="left", **kwargs):
    tiny.processor.tokenizer.padding_side = padding_side
    images = [[PHOTO.resize(s) for s in sizes] for sizes in sizes_per_prompt]
    text = [tiny.prompt(q, images=len(s)) for q, s in zip(questions, sizes_per_prompt, strict=True)]
    return tiny.processor(images=images, text=text, return_tensors="pt", padding=True, **kwargs)


def test_keep_one_is_the_identity(tiny):
    check_keep_one_is_the_identity(tiny.model, encode(tiny, [SIZES[:1], SIZES[1:]], ["What?", "Compare the two."]))


@pytest.mark.parametrize("positions", ["original", "compact"])
def test_pruned_forward_matches_hand_built_sequence(tiny, positions):
    inputs = encode(tiny, [SIZES[:1]], ["What is on the table?"])
    model = tiny.model
    # the tile count from the image processor itself, independently of the adapter's marker parsing
    info = tiny.processor.image_processor(
        [[PHOTO.resize(SIZES[0])]], return_row_col_info=True, size={"longest_edge": LONGEST_EDGE}
    )
    tiles = info["rows"][0][0] * info["cols"][0][0]
    assert tiles == 2
    features = model.get_image_features(inputs["pixel_values"], inputs["pixel_attention_mask"]).pooler_output[0]
    split = tiles * VIEW
    kept = torch.cat([select_tokens(features[:split], 0.3), split + select_tokens(features[split:], 0.3)])
    ids = inputs["input_ids"][0]
    want, keep_cols = hand_built_logits(model, model.model.text_model, ids, features, kept, positions)
    with gprune.pruned(model, gprune.GPruneConfig(keep=0.3, positions=positions)):
        logits = model(**inputs).logits
        report = gprune.last_report(model)
    torch.testing.assert_close(logits[0, keep_cols], want, rtol=1e-5, atol=1e-5)
    assert torch.equal(report.images[0].kept_indices, kept)
    assert (ids[~keep_cols] == model.config.image_token_id).all()  # markers and text all stay


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_batch_of_different_images_equals_per_sample(tiny, padding_side):
    prompts = [[SIZES[0]], [SIZES[1], SIZES[2]]]
    check_batch_equals_per_sample(tiny, encode, prompts, ["What?", "Are these two the same picture?"], padding_side)


@pytest.mark.parametrize("keep", [0.3, 20])
@pytest.mark.parametrize("splitting", [True, False])
def test_kept_count_is_a_pure_function_of_size_and_keep(tiny, keep, splitting):
    sizes = [(96, 30), (40, 70), (200, 20), (30, 30)]
    batch = encode(tiny, [sizes[:2], sizes[2:]], ["A?", "B?"], do_image_splitting=splitting)
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=keep)):
        tiny.model(**batch)
        report = gprune.last_report(tiny.model)
    settings = {"longest_edge": LONGEST_EDGE, "do_image_splitting": splitting}
    for r, (w, h) in zip(report.images, sizes, strict=True):
        assert r.tokens_after == gprune.kept_tokens(tiny.model, (h, w), keep, **settings)
        assert r.tokens_before == gprune.image_layout(tiny.model.config, (h, w), **settings).length
    assert [r.batch_index for r in report.images] == [0, 0, 1, 1]
    placeholders = (batch["input_ids"] == tiny.model.config.image_token_id).sum(1)
    assert [sum(r.tokens_before for r in report.images if r.batch_index == b) for b in (0, 1)] == placeholders.tolist()
    if splitting:
        assert [r.tokens_before for r in report.images] == [3 * VIEW, 5 * VIEW, 3 * VIEW, 5 * VIEW]


def test_malformed_image_tokens_get_a_clear_error(tiny):
    inputs = encode(tiny, [SIZES[:1]], ["What?"])
    ids = inputs["input_ids"].clone()
    ids[0, torch.nonzero(ids[0] == tiny.model.config.image_token_id)[3]] = 100  # break one view's run
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=0.3)), pytest.raises(ValueError) as raised:
        tiny.model(**{**inputs, "input_ids": ids})
    # The model's own error, with what gprune found as its cause.
    assert str(raised.value).startswith("Image features and image tokens do not match")
    assert "run of 3 image" in str(raised.value.__cause__)


def test_tiled_layout_groups_tiles_and_global_view():
    from gprune.layouts import kept_token_count, tiled_layout

    layout = tiled_layout(4, 3)
    assert [g.tolist() for g in layout.groups] == [list(range(12)), [12, 13, 14, 15]]
    assert kept_token_count(layout, 0.5) == 6 + 2
    assert [g.tolist() for g in tiled_layout(4, 0).groups] == [[0, 1, 2, 3]]
    with pytest.raises(ValueError, match="tiles"):
        tiled_layout(4, -1)


def test_prompt_without_images_in_a_batch_is_untouched(tiny):
    text_only = "User: just text<end_of_utterance>\nAssistant:"
    tiny.processor.tokenizer.padding_side = "left"
    batch = tiny.processor(
        images=[[PHOTO.resize(SIZES[0])], []], text=[tiny.prompt("What?"), text_only], return_tensors="pt", padding=True
    )
    single = tiny.processor(text=[text_only], return_tensors="pt")
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=0.3)):
        out = greedy(tiny.model, batch)
        assert [r.batch_index for r in gprune.last_report(tiny.model).images] == [0]
    assert torch.equal(out[1, -4:], greedy(tiny.model, single)[0, -4:])


RELEASED_SIZES = [(400, 600), (600, 400), (364, 364), (365, 364), (100, 3000), (2000, 1100), (37, 2900)]  # (h, w)


def test_layout_matches_the_image_processor_at_released_settings():
    """Idefics3-8B (364 px tiles, 169 tokens, longest edge 1456) and SmolVLM-256M (512 px, 64, 2048)."""
    from transformers import Idefics3Config, SmolVLMConfig
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    released = [
        (Idefics3Config(vision_config={"image_size": 364, "patch_size": 14}), 364, 1456, 169),
        (SmolVLMConfig(vision_config={"image_size": 512, "patch_size": 16}, scale_factor=4), 512, 2048, 64),
    ]
    for config, tile, longest, view in released:
        processor = Idefics3ImageProcessorPil(size={"longest_edge": longest}, max_image_size={"longest_edge": tile})
        for h, w in RELEASED_SIZES:
            out = processor([[Image.new("RGB", (w, h))]], return_row_col_info=True)
            rows, cols = out["rows"][0][0], out["cols"][0][0]
            want = (rows * cols + 1 if rows else 1) * view
            assert gprune.image_layout(config, (h, w), longest_edge=longest).length == want, (config.model_type, h, w)
