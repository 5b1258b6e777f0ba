"""Gemma 3 through `gprune.apply`: fixed tokens per image, bidirectional image blocks via token_type_ids."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import gprune
from gprune.core import select_tokens
from gprune.testing.gemma3 import tiny_gemma3
from hand_built import full_embeddings, kept_columns

PHOTO = Image.open(gprune.__path__[0] + "/assets/coffee.jpg").convert("RGB")


@pytest.fixture(scope="module")
def tiny():
    return tiny_gemma3()


def encode(tiny, images_per_prompt, questions):
    tiny.processor.tokenizer.padding_side = "left"
    sizes = iter([(60, 40), (40, 70), (96, 30), (50, 50)])
    images = [[PHOTO.resize(next(sizes)) for _ in range(n)] for n in images_per_prompt]
    text = [tiny.prompt(q, images=n) for q, n in zip(questions, images_per_prompt, strict=True)]
    return tiny.processor(images=images, text=text, return_tensors="pt", padding=True)


def test_keep_one_is_the_identity(tiny):
    inputs = encode(tiny, [1, 2], ["What?", "Compare the two."])
    want_logits = tiny.model(**inputs).logits
    want = tiny.model.generate(**inputs, max_new_tokens=4, do_sample=False, num_beams=2)
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=1.0)):
        assert torch.equal(tiny.model(**inputs).logits, want_logits)
        assert torch.equal(tiny.model.generate(**inputs, max_new_tokens=4, do_sample=False, num_beams=2), want)


def test_pruned_forward_matches_hand_built_sequence_with_bidirectional_image_block(tiny):
    inputs = encode(tiny, [1], ["What is on the table?"])
    model = tiny.model
    features = model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output[0]
    kept = select_tokens(features, 0.3)
    ids = inputs["input_ids"][0]
    cols, keep_cols = kept_columns(ids, model.config.image_token_id, kept)
    embeds = full_embeddings(model, ids, cols, features)
    want = model(
        inputs_embeds=embeds[keep_cols][None],
        token_type_ids=inputs["token_type_ids"][0, keep_cols][None],
        position_ids=torch.arange(ids.numel())[keep_cols][None],
        attention_mask=torch.ones(1, int(keep_cols.sum()), dtype=torch.long),
    ).logits[0]
    with gprune.pruned(model, gprune.GPruneConfig(keep=0.3)):
        logits = model(**inputs).logits
        report = gprune.last_report(model)
    torch.testing.assert_close(logits[0, keep_cols], want, rtol=1e-5, atol=1e-5)
    assert torch.equal(report.images[0].kept_indices, kept)
    # without the image block's bidirectional attention the result differs: the block really is kept
    causal_only = model(
        inputs_embeds=embeds[keep_cols][None],
        position_ids=torch.arange(ids.numel())[keep_cols][None],
        attention_mask=torch.ones(1, int(keep_cols.sum()), dtype=torch.long),
    ).logits[0]
    assert not torch.allclose(causal_only, want, atol=1e-4)


def test_batch_with_several_images_equals_per_sample(tiny):
    questions = ["What?", "Compare the two pictures here."]
    batch = encode(tiny, [1, 2], questions)
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=5)):
        out = tiny.model.generate(**batch, max_new_tokens=4, do_sample=False)
        report = gprune.last_report(tiny.model)
        first = encode(tiny, [1], questions[:1])
        assert torch.equal(out[0, -4:], tiny.model.generate(**first, max_new_tokens=4, do_sample=False)[0, -4:])
    assert [(r.batch_index, r.tokens_before, r.tokens_after) for r in report.images] == [
        (0, 16, 5),
        (1, 16, 5),
        (1, 16, 5),
    ]
    assert gprune.kept_tokens(tiny.model, (40, 60), 5) == 5
    assert gprune.kept_tokens(tiny.model.config, (700, 300), 0.3) == int(0.3 * 16)
