"""LLaVA-1.5, LLaVA-OneVision and Mistral 3 through `gprune.apply` (LLaVA-NeXT in detail: test_hf_llava.py)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import gprune
from gprune.core import select_tokens
from gprune.testing import tiny_llava_onevision, tiny_model
from gprune.video import kept_video_tokens
from hand_built import hand_built_logits

PHOTO = Image.open(gprune.__path__[0] + "/assets/coffee.jpg").convert("RGB")
SIZES = [(60, 40), (40, 70), (96, 30)]  # (width, height)
QUESTIONS = ["What?", "What is on the table here?", "Is it a cup of coffee?"]


@pytest.fixture(scope="module", params=["llava", "llava_onevision", "mistral3"])
def tiny(request):
    return tiny_model(request.param)


def layout_kwargs(tiny):
    """Processor settings the kept count depends on (Mistral 3: the tiny processor's longest edge)."""
    return {"longest_edge": 64} if tiny.model.config.model_type == "mistral3" else {}


def encode(tiny, sizes, questions, padding_side="left", images_per_prompt=1):
    tiny.processor.tokenizer.padding_side = padding_side
    text = [tiny.prompt(q, images=images_per_prompt) for q in questions]
    images = [PHOTO.resize(s) for s in sizes]
    if images_per_prompt > 1:  # nested per prompt, so the processor knows which images share a prompt
        images = [images[i : i + images_per_prompt] for i in range(0, len(images), images_per_prompt)]
    return tiny.processor(images=images, text=text, return_tensors="pt", padding=True)


def greedy(model, inputs, **kwargs):
    return model.generate(**inputs, max_new_tokens=5, do_sample=False, **kwargs)


def test_keep_one_is_the_identity(tiny):
    inputs = encode(tiny, SIZES[:2], QUESTIONS[:2])
    want_logits = tiny.model(**inputs).logits
    want = greedy(tiny.model, inputs, num_beams=2)
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=1.0)):
        assert torch.equal(tiny.model(**inputs).logits, want_logits)
        assert torch.equal(greedy(tiny.model, inputs, num_beams=2), want)


def reference_kept(model, features):
    """Independent grouping: LLaVA-1.5 and Mistral 3 one graph; OneVision base / grid / newlines by value."""
    if model.config.model_type in ("llava", "mistral3"):
        return select_tokens(features, 0.3)
    newline = (features == model.model.image_newline).all(-1)
    base = torch.arange(16)
    grid = torch.nonzero(~newline[16:]).squeeze(1) + 16
    parts = [base[select_tokens(features[base], 0.3)], torch.nonzero(newline).squeeze(1)]
    if grid.numel():
        parts.append(grid[select_tokens(features[grid], 0.3)])
    return torch.sort(torch.cat(parts)).values


def test_pruned_forward_matches_hand_built_sequence(tiny):
    inputs = encode(tiny, SIZES[:1], QUESTIONS[:1])
    model = tiny.model
    image_inputs = {k: inputs[k] for k in ("pixel_values", "image_sizes") if k in inputs}
    features = model.get_image_features(**image_inputs).pooler_output[0]
    kept = reference_kept(model, features)
    ids = inputs["input_ids"][0]
    want, keep_cols = hand_built_logits(model, model.model.language_model, ids, features, kept)
    with gprune.pruned(model, gprune.GPruneConfig(keep=0.3)):
        logits = model(**inputs).logits
        report = gprune.last_report(model)
    torch.testing.assert_close(logits[0, keep_cols], want, rtol=1e-5, atol=1e-5)
    assert torch.equal(report.images[0].kept_indices, kept)


def test_left_padded_batch_equals_per_sample(tiny):
    batch = encode(tiny, SIZES, QUESTIONS)
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=0.3)):
        out = greedy(tiny.model, batch)
        logits = tiny.model(**batch).logits
        for i in range(len(SIZES)):
            single = encode(tiny, SIZES[i : i + 1], QUESTIONS[i : i + 1])
            assert torch.equal(out[i, -5:], greedy(tiny.model, single)[0, -5:])
            valid = batch["attention_mask"][i].bool()
            torch.testing.assert_close(logits[i, valid], tiny.model(**single).logits[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("keep", [0.3, 20])
def test_kept_count_is_a_pure_function_of_size_and_keep(tiny, keep):
    batch = encode(tiny, SIZES, QUESTIONS)
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=keep)):
        tiny.model(**batch)
        report = gprune.last_report(tiny.model)
    for r, (w, h) in zip(report.images, SIZES, strict=True):
        assert r.tokens_after == gprune.kept_tokens(tiny.model, (h, w), keep, **layout_kwargs(tiny))
        assert r.tokens_before == gprune.image_layout(tiny.model.config, (h, w), **layout_kwargs(tiny)).length
    placeholders = (batch["input_ids"] == tiny.model.config.image_token_id).sum(1)
    assert [r.tokens_before for r in report.images] == placeholders.tolist()


def test_onevision_multi_image_prompt_uses_single_tiles():
    tiny = tiny_llava_onevision()
    inputs = encode(tiny, SIZES[:2], ["Compare them."], images_per_prompt=2)
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=0.5)):
        out = greedy(tiny.model, inputs)
        report = gprune.last_report(tiny.model)
    assert [r.tokens_before for r in report.images] == [17, 17]  # 4x4 tile + newline
    assert [r.tokens_after for r in report.images] == [
        gprune.kept_tokens(tiny.model, (40, 60), 0.5, multi_image=True)
    ] * 2
    assert all(16 in r.kept_indices.tolist() for r in report.images)  # the newline is always kept
    assert torch.equal(out[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])


def test_onevision_anyres_max_shrinks_large_grids_as_the_model_does():
    tiny = tiny_llava_onevision(vision_aspect_ratio="anyres_max_1")
    inputs = encode(tiny, [(96, 96), (30, 96)], ["A?", "B?"])
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=0.5)):
        tiny.model(**inputs)
        report = gprune.last_report(tiny.model)
    for r, (w, h) in zip(report.images, [(96, 96), (30, 96)], strict=True):
        layout = gprune.image_layout(tiny.model, (h, w))
        assert r.tokens_before == layout.length
        assert r.tokens_after == gprune.kept_tokens(tiny.model, (h, w), 0.5)
    full = gprune.image_layout(tiny_llava_onevision().model, (96, 96))
    assert gprune.image_layout(tiny.model, (96, 96)).length < full.length  # the rule did shrink the grid


def test_onevision_videos_are_pruned_next_to_images():
    """A smoke test on hand-written placeholders; OneVision videos in detail: test_hf_onevision_video.py."""
    tiny = tiny_llava_onevision()
    frames = 2
    text = ["USER: <image>\nWhat happens? ASSISTANT:"]
    inputs = tiny.processor(images=[PHOTO.resize((60, 40))], text=text, return_tensors="pt")
    ids = inputs["input_ids"][0]
    after_image = int(torch.nonzero(ids == tiny.model.config.image_token_id).max()) + 1
    video = torch.full((frames * 4 + 1,), tiny.model.config.video_token_id)  # 2x2-pooled frames + a newline
    inputs["input_ids"] = torch.cat([ids[:after_image], video, ids[after_image:]])[None]
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    inputs["pixel_values_videos"] = torch.randn(1, frames, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    want = tiny.model(**inputs).logits
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=1.0)):
        assert torch.equal(tiny.model(**inputs).logits, want)
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=0.3)):
        out = greedy(tiny.model, inputs)
        report = gprune.last_report(tiny.model)
        video_only = {k: v for k, v in inputs.items() if k not in ("pixel_values", "image_sizes", "batch_num_images")}
        video_only["input_ids"] = inputs["input_ids"][:, inputs["input_ids"][0] != tiny.model.config.image_token_id]
        video_only["attention_mask"] = torch.ones_like(video_only["input_ids"])
        tiny.model(**video_only)  # a video-only call is pruned too
        video_report = gprune.last_report(tiny.model)
    assert [r.kind for r in report.images] == ["image", "video"]
    assert all(r.tokens_after < r.tokens_before for r in report.images)
    kept = kept_video_tokens(frames, 4, 0.3, always_kept_tail=1)  # int(0.3 * 4) = 1 per frame + the newline
    assert report.images[1].tokens_after == kept == 3
    assert [(r.kind, r.tokens_after) for r in video_report.images] == [("video", kept)]
    assert torch.equal(out[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])
