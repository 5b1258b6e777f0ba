"""InternVL through `gprune.apply`: tiles and thumbnail per image, kept features as a (tokens, 1, D) tensor."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import gprune
from gprune.core import select_tokens
from gprune.testing.internvl import MAX_PATCHES, VIEW_TOKENS, tiny_internvl
from hand_built import hand_built_logits
from tiled_checks import check_batch_equals_per_sample, check_keep_one_is_the_identity, greedy

PHOTO = Image.open(gprune.__path__[0] + "/assets/coffee.jpg").convert("RGB")
SIZES = [(40, 70), (60, 40), (96, 30)]  # (width, height): 2 tiles + thumbnail, 1 view, 3 tiles + thumbnail


@pytest.fixture(scope="module")
def tiny():
    return tiny_internvl()


def encode(tiny, sizes_per_prompt, questions, padding_side="left"):
    tiny.processor.tokenizer.padding_side = padding_side
    images = [PHOTO.resize(s) for sizes in sizes_per_prompt for s in sizes]
    text = [tiny.prompt(q, images=len(s)) for q, s in zip(questions, sizes_per_prompt, strict=True)]
    return tiny.processor(images=images, text=text, return_tensors="pt", padding=True)


def test_keep_one_is_the_identity(tiny):
    check_keep_one_is_the_identity(tiny.model, encode(tiny, [SIZES[:1], SIZES[1:]], ["What?", "Compare the two."]))


@pytest.mark.parametrize("positions", ["original", "compact"])
def test_pruned_forward_matches_hand_built_sequence(tiny, positions):
    inputs = encode(tiny, [SIZES[:1]], ["What is on the table?"])
    model = tiny.model
    # the view count from the image processor itself, independently of the adapter's run parsing
    views = tiny.processor.image_processor([PHOTO.resize(SIZES[0])], crop_to_patches=True)["num_patches"][0]
    assert views == 3
    features = model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
    tiles, thumbnail = features[: views - 1].reshape(-1, features.shape[-1]), features[views - 1]
    kept = torch.cat([select_tokens(tiles, 0.3), tiles.shape[0] + select_tokens(thumbnail, 0.3)])
    ids = inputs["input_ids"][0]
    flat = features.reshape(-1, features.shape[-1])
    want, keep_cols = hand_built_logits(model, model.model.language_model, ids, flat, kept, positions)
    with gprune.pruned(model, gprune.GPruneConfig(keep=0.3, positions=positions)):
        logits = model(**inputs).logits
        report = gprune.last_report(model)
    torch.testing.assert_close(logits[0, keep_cols], want, rtol=1e-5, atol=1e-5)
    assert torch.equal(report.images[0].kept_indices, kept)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_batch_of_different_images_equals_per_sample(tiny, padding_side):
    prompts = [[SIZES[0]], [SIZES[1], SIZES[2]]]  # rows keep different numbers of tokens
    check_batch_equals_per_sample(tiny, encode, prompts, ["What?", "Are these two the same picture?"], padding_side)


@pytest.mark.parametrize("keep", [0.3, 20])
def test_kept_count_is_a_pure_function_of_size_and_keep(tiny, keep):
    sizes = [(40, 70), (60, 40), (96, 30), (200, 20)]
    batch = encode(tiny, [sizes[:2], sizes[2:]], ["A?", "B?"])
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=keep)):
        tiny.model(**batch)
        report = gprune.last_report(tiny.model)
    for r, (w, h) in zip(report.images, sizes, strict=True):
        assert r.tokens_after == gprune.kept_tokens(tiny.model, (h, w), keep, max_patches=MAX_PATCHES)
        assert r.tokens_before == gprune.image_layout(tiny.model.config, (h, w), max_patches=MAX_PATCHES).length
    assert [r.tokens_before for r in report.images] == [3 * VIEW_TOKENS, VIEW_TOKENS, 4 * VIEW_TOKENS, 5 * VIEW_TOKENS]
    assert [r.batch_index for r in report.images] == [0, 0, 1, 1]


def test_malformed_image_tokens_get_a_clear_error(tiny):
    inputs = encode(tiny, [SIZES[:1]], ["What?"])
    ids = inputs["input_ids"].clone()
    ids[0, torch.nonzero(ids[0] == tiny.model.config.image_token_id)[-1]] = 100  # one token short
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=0.3)), pytest.raises(ValueError) as raised:
        tiny.model(**{**inputs, "input_ids": ids})
    # The model's own error, with what gprune found as its cause.
    assert str(raised.value).startswith("Image features and image tokens do not match")
    assert "whole views" in str(raised.value.__cause__)


def test_prompt_without_images_in_a_batch_is_untouched(tiny):
    tiny.processor.tokenizer.padding_side = "left"
    batch = tiny.processor(
        images=[PHOTO.resize(SIZES[2])], text=[tiny.prompt("What?"), "just text"], return_tensors="pt", padding=True
    )
    single = tiny.processor(text=["just text"], return_tensors="pt")
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=0.3)):
        out = greedy(tiny.model, batch, num_beams=2)
        assert [r.batch_index for r in gprune.last_report(tiny.model).images] == [0]
    assert torch.equal(out[1, -4:], greedy(tiny.model, single, num_beams=2)[0, -4:])


def test_layout_matches_the_image_processor_at_released_settings():
    """InternVL3-hf: 448 px tiles of 256 tokens, 1 to 12 tiles, a thumbnail when there are several."""
    from transformers import InternVLConfig
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    config = InternVLConfig(vision_config={"image_size": 448, "patch_size": 14})
    processor = GotOcr2ImageProcessorPil(size={"height": 448, "width": 448}, crop_to_patches=True, max_patches=12)
    for h, w in [(400, 600), (600, 400), (448, 448), (100, 3000), (2000, 1100), (37, 2900), (900, 1800)]:
        views = processor([Image.new("RGB", (w, h))])["num_patches"][0]
        assert gprune.image_layout(config, (h, w)).length == views * 256, (h, w)
