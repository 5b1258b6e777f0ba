"""LLaVA-OneVision videos pruned through `gprune.apply` on the tiny model.

Inputs come from the real `LlavaOnevisionProcessor` (its own ``<video>`` expansion: frames x pooled tokens
+ 1 newline), with a stand-in for its video processor (`onevision_video_inputs.HandVideoProcessor`):
`LlavaOnevisionVideoProcessor` needs torchvision, which this environment must not install.

References are built here without the adapter: the model's own ``get_video_features`` output, kept
indices from `gprune.core.select_tokens` on each frame (or the whole video) plus the newline, written into
the prompt's embeddings and run cache-free at the gathered (or compacted) positions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import gprune
from gprune.adapters import get_adapter
from gprune.adapters.llava import onevision_video_frame_tokens
from gprune.config import GPruneConfig
from gprune.core import select_tokens
from gprune.pipeline import prune_call
from gprune.testing import tiny_llava_onevision
from gprune.testing.llava import TinyModel
from gprune.video import kept_video_tokens
from onevision_video_inputs import HandVideoProcessor

FRAMES = 4
NEW_TOKENS = 3


@pytest.fixture(scope="module")
def tiny() -> TinyModel:
    tiny = tiny_llava_onevision()
    tiny.processor.video_processor = HandVideoProcessor()
    return tiny


def _video(seed: int, frames: int = FRAMES) -> np.ndarray:
    """A fixed random background with a bright square moving across it, (frames, 40, 48, 3) uint8."""
    rng = np.random.default_rng(seed)
    video = np.repeat((rng.random((40, 48, 3)) * 200)[None], frames, axis=0)
    for t in range(frames):
        video[t, 4:16, 12 * t : 12 * t + 12] = 255
    return video.astype("uint8")


def _image(seed: int) -> Image.Image:
    return Image.fromarray((np.random.default_rng(seed).random((40, 60, 3)) * 255).astype("uint8"))


def _encode(tiny: TinyModel, prompts: list[tuple[bool, str]], side: str = "left", seed: int = 0) -> Any:
    """One row per prompt ``(with_image, question)``: an image first where asked, then a video, then the question."""
    tiny.processor.tokenizer.padding_side = side
    text = [f"USER: {'<image>' + chr(10) if image else ''}<video>\n{q} ASSISTANT:" for image, q in prompts]
    images = [_image(seed + i) for i, (image, _) in enumerate(prompts) if image]
    videos = [_video(seed + i) for i in range(len(prompts))]
    return tiny.processor(images=images or None, videos=videos, text=text, return_tensors="pt", padding=True)


MIXED = [(True, "What changes?"), (False, "Where does it go?")]


def _generate(model: Any, inputs: Any) -> Any:
    """Greedy, exactly NEW_TOKENS new tokens in every row (an early end-of-text would shift the rows apart)."""
    with torch.no_grad():
        return model.generate(
            **inputs,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )


def test_processor_and_model_agree_on_frames_then_one_newline(tiny: TinyModel) -> None:
    inputs = _encode(tiny, [(False, "What?")])
    per_frame = onevision_video_frame_tokens(tiny.model.config)
    assert per_frame == 4  # a 4x4 view pooled 2x2
    placeholders = int((inputs["input_ids"] == tiny.model.config.video_token_id).sum())
    assert placeholders == FRAMES * per_frame + 1
    with torch.no_grad():
        features = tiny.model.model.get_video_features(inputs["pixel_values_videos"]).pooler_output
    assert tuple(features.shape[:2]) == (1, placeholders)
    assert torch.equal(features[0, -1], tiny.model.model.image_newline.to(features.dtype))


@pytest.mark.parametrize("window", [1, 0])
def test_keep_one_is_identical_with_images_and_videos(tiny: TinyModel, window: int) -> None:
    inputs = _encode(tiny, MIXED)
    with torch.no_grad():
        want_logits = tiny.model(**inputs).logits
    want = _generate(tiny.model, inputs)
    for positions in ("original", "compact"):
        config = GPruneConfig(keep=1.0, video_window=window, positions=positions)
        with gprune.pruned(tiny.model, config), torch.no_grad():
            assert torch.equal(tiny.model(**inputs).logits, want_logits)
            got = _generate(tiny.model, inputs)
            report = gprune.last_report(tiny.model)
        assert [(r.kind, r.batch_index) for r in report.images] == [("image", 0), ("video", 0), ("video", 1)]
        assert report.tokens_after == report.tokens_before
        assert torch.equal(got.sequences, want.sequences)
        for a, b in zip(got.logits, want.logits, strict=True):
            assert torch.equal(a, b)


def _reference_kept(features: torch.Tensor, keep: float, window: int) -> torch.Tensor:
    """Kept indices into one video's tokens: `select_tokens` per frame (window 1) or over all frames (0), newline."""
    newline = features.shape[0] - 1
    if window == 1:
        parts = [select_tokens(features[t * 4 : t * 4 + 4], keep) + t * 4 for t in range(newline // 4)]
    else:
        parts = [select_tokens(features[:newline], keep)]
    return torch.sort(torch.cat([*parts, torch.tensor([newline])])).values


def _reference_logits(
    tiny: TinyModel, ids: torch.Tensor, features: torch.Tensor, kept: torch.Tensor, positions: str, new: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Cache-free logits of one unpadded prompt (all columns kept but the pruned video tokens), the last row's
    logits with each prefix of the generated tokens appended (what generate scores at each step), and the
    mask of kept columns."""
    model = tiny.model
    columns = (ids == model.config.video_token_id).nonzero().flatten()
    keep = torch.ones_like(ids, dtype=torch.bool)
    keep[columns] = False
    keep[columns[kept]] = True
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
        embeds[columns] = features
        embeds = embeds[keep]
        place = torch.arange(ids.numel())[keep] if positions == "original" else torch.arange(int(keep.sum()))
        step_logits = []
        for step in range(NEW_TOKENS):
            sequence = torch.cat([embeds, model.get_input_embeddings()(new[:step])])[None]
            tail = torch.arange(int(place[-1]) + 1, int(place[-1]) + 1 + step)
            logits = model(
                inputs_embeds=sequence,
                attention_mask=torch.ones(sequence.shape[:2], dtype=torch.long),
                position_ids=torch.cat([place, tail])[None],
                use_cache=False,
            ).logits[0]
            step_logits.append(logits)
    return step_logits[0], [s[-1] for s in step_logits], keep


@pytest.mark.parametrize(("positions", "window"), [("original", 1), ("compact", 1), ("original", 0)])
def test_pruned_video_matches_independent_reference(tiny: TinyModel, positions: str, window: int) -> None:
    inputs = _encode(tiny, [(False, "Where does it go?")])
    config = GPruneConfig(keep=0.5, video_window=window, positions=positions)
    with gprune.pruned(tiny.model, config), torch.no_grad():
        forward = tiny.model(**inputs).logits
        generated = _generate(tiny.model, inputs)
        (video,) = gprune.last_report(tiny.model).images
    with torch.no_grad():
        features = tiny.model.model.get_video_features(inputs["pixel_values_videos"]).pooler_output[0]
    kept = _reference_kept(features, 0.5, window)
    assert video.kind == "video" and torch.equal(video.kept_indices, kept)
    assert FRAMES * 4 in kept.tolist()  # the newline
    ids = inputs["input_ids"][0]
    prompt = ids.numel()
    assert torch.equal(generated.sequences[0, :prompt], ids)
    want_forward, want_steps, keep = _reference_logits(
        tiny, ids, features, kept, positions, generated.sequences[0, prompt:]
    )
    torch.testing.assert_close(forward[0, keep], want_forward, rtol=1e-4, atol=1e-5)
    for step, want in enumerate(want_steps):
        torch.testing.assert_close(generated.logits[step][0], want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("window", "video_keep"), [(1, None), (1, 0.25), (0, 0.5), (2, 7)])
def test_kept_count_is_a_pure_function_of_video_shape_and_config(
    tiny: TinyModel, window: int, video_keep: float | int | None
) -> None:
    inputs = _encode(tiny, MIXED)
    with gprune.pruned(tiny.model, GPruneConfig(keep=0.5, video_keep=video_keep, video_window=window)):
        tiny.model(**inputs)
        report = gprune.last_report(tiny.model)
    want_keep = 0.5 if video_keep is None else video_keep
    videos = [r for r in report.images if r.kind == "video"]
    assert len(videos) == 2
    for r in videos:
        assert r.tokens_before == FRAMES * 4 + 1
        assert r.tokens_after == kept_video_tokens(FRAMES, 4, want_keep, window=window, always_kept_tail=1)
        assert r.kept_indices[-1] == FRAMES * 4  # the newline is always kept
        if window == 1:  # every frame keeps its own share
            frame_of = r.kept_indices[:-1] // 4
            assert torch.bincount(frame_of, minlength=FRAMES).tolist() == [int(want_keep * 4)] * FRAMES
    (image,) = [r for r in report.images if r.kind == "image"]
    assert image.tokens_after == gprune.kept_tokens(tiny.model, (40, 60), 0.5)  # images keep `keep`


def test_kept_video_tokens_counts_the_tail() -> None:
    assert kept_video_tokens(4, 4, 0.5, always_kept_tail=1) == 4 * 2 + 1
    assert kept_video_tokens(4, 4, 0.5, window=0, always_kept_tail=1) == 8 + 1
    assert kept_video_tokens(4, 4, 7, window=2, always_kept_tail=1) == 7  # a budget includes the newline
    assert kept_video_tokens(4, 4, 0.5) == 8  # without a tail: unchanged
    with pytest.raises(ValueError, match="always_kept_tail"):
        kept_video_tokens(4, 4, 0.5, always_kept_tail=-1)


def test_video_window_changes_the_grouping(tiny: TinyModel) -> None:
    inputs = _encode(tiny, [(False, "Where does it go?")])
    kept = {}
    for window in (1, 0):
        with gprune.pruned(tiny.model, GPruneConfig(keep=0.5, video_window=window)):
            tiny.model(**inputs)
            kept[window] = gprune.last_report(tiny.model).images[0].kept_indices
    assert kept[1].numel() == kept[0].numel() == 9
    per_frame = {w: torch.bincount(k[:-1] // 4, minlength=FRAMES).tolist() for w, k in kept.items()}
    assert per_frame[1] == [2] * FRAMES
    assert per_frame[0] != per_frame[1]  # one graph over the video lets frames take each other's share


def test_batch_generate_equals_per_sample(tiny: TinyModel) -> None:
    config = GPruneConfig(keep=0.5, video_keep=0.5, video_window=2)
    with gprune.pruned(tiny.model, config):
        together = _generate(tiny.model, _encode(tiny, MIXED))
        batch_report = gprune.last_report(tiny.model)
        for b, prompt in enumerate(MIXED):
            alone = _generate(tiny.model, _encode(tiny, [prompt], seed=b))
            report = gprune.last_report(tiny.model)
            assert torch.equal(together.sequences[b, -NEW_TOKENS:], alone.sequences[0, -NEW_TOKENS:])
            for step in range(NEW_TOKENS):
                torch.testing.assert_close(together.logits[step][b], alone.logits[step][0], rtol=1e-4, atol=1e-5)
            mine = [(r.kind, r.kept_indices.tolist()) for r in batch_report.images if r.batch_index == b]
            assert mine == [(r.kind, r.kept_indices.tolist()) for r in report.images]


@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_forward_equals_per_sample(tiny: TinyModel, side: str) -> None:
    config = GPruneConfig(keep=0.5, video_keep=0.25, video_window=0)
    inputs = _encode(tiny, MIXED, side)
    with gprune.pruned(tiny.model, config), torch.no_grad():
        together = tiny.model(**inputs).logits
        for b, prompt in enumerate(MIXED):
            alone = tiny.model(**_encode(tiny, [prompt], side, seed=b)).logits
            mask = inputs["attention_mask"][b].bool()
            torch.testing.assert_close(together[b][mask], alone[0], rtol=1e-4, atol=1e-5)


def test_video_only_call_is_pruned(tiny: TinyModel) -> None:
    inputs = _encode(tiny, [(False, "What?")])
    assert "pixel_values" not in inputs
    call = prune_call(get_adapter(tiny.model), dict(inputs), GPruneConfig(keep=0.5), for_generate=True)
    (video,) = call.report.images
    assert video.kind == "video" and video.tokens_after == FRAMES * 2 + 1
    outputs = call.model_kwargs["mm_encoder_outputs"]
    assert set(outputs) == {"video"}
    with torch.no_grad():
        full = tiny.model.model.get_video_features(inputs["pixel_values_videos"]).pooler_output[0]
    assert torch.equal(outputs["video"].pooler_output[0], full[video.kept_indices])
    assert int((call.model_kwargs["input_ids"] == tiny.model.config.video_token_id).sum()) == FRAMES * 2 + 1


def test_video_token_count_mismatch_is_a_clear_error(tiny: TinyModel) -> None:
    inputs = dict(_encode(tiny, [(False, "What?")]))
    video_id = tiny.model.config.video_token_id
    ids = inputs["input_ids"][0]
    first = int((ids == video_id).nonzero()[0])
    inputs["input_ids"] = torch.cat([ids[:first], ids[first + 1 :]])[None]  # one placeholder short
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    adapter = get_adapter(tiny.model)
    mismatch = "^Video features and video tokens do not match, tokens: 16, features: 17"
    with pytest.raises(ValueError, match=mismatch + r".*1 video\(s\) of 17 visual tokens, video placeholder id"):
        prune_call(adapter, inputs, GPruneConfig(keep=0.5), for_generate=False)
    with gprune.pruned(tiny.model), pytest.raises(ValueError, match="Video features and video tokens do not match"):
        tiny.model(**inputs)
    flat = {**inputs, "pixel_values_videos": inputs["pixel_values_videos"][0]}
    with pytest.raises(ValueError, match=r"pixel_values_videos must be \(videos, frames, channels, height, width\)"):
        prune_call(adapter, flat, GPruneConfig(keep=0.5), for_generate=False)
