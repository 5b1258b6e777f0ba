"""Videos pruned through `gprune.apply` on tiny Qwen2-VL / Qwen2.5-VL / Qwen3-VL models.

Video inputs are built by hand as the processors would (`qwen_video_inputs`; frames as arrays). Reference
values come from the unpruned model, or from a cache-free forward built here: the model's own video
features cut by the reported kept indices, 3-D positions from the model's own ``get_rope_index`` on the
unpruned ids with the kept columns gathered.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import gprune
from gprune.adapters import get_adapter
from gprune.config import GPruneConfig
from gprune.pipeline import prune_call
from gprune.testing.qwen import QWEN_MODEL_TYPES, TinyModel, tiny_qwen
from gprune.video import kept_video_tokens, video_layout
from qwen_reference import cut_encoder_output, keep_mask_from_report, reference_positions
from qwen_video_inputs import batch, sample

NEW_TOKENS = 3


@pytest.fixture(scope="module", params=QWEN_MODEL_TYPES)
def tiny(request: pytest.FixtureRequest) -> TinyModel:
    return tiny_qwen(request.param)


def _frames(tiny: TinyModel, count: int, rows: int, cols: int, seed: int) -> np.ndarray:
    """`count` frames of rows x cols patches: a fixed background with a bright square moving across it."""
    patch = tiny.model.config.vision_config.patch_size
    rng = np.random.default_rng(seed)
    background = rng.random((rows * patch, cols * patch, 3)) * 200
    frames = np.repeat(background[None], count, axis=0)
    for t in range(count):
        x = (t * patch) % (cols * patch - patch)
        frames[t, :patch, x : x + patch] = 255
    return frames.astype("uint8")


def _image(seed: int) -> Image.Image:
    return Image.fromarray((np.random.default_rng(seed).random((60, 90, 3)) * 255).astype("uint8"))


def _mixed(tiny: TinyModel) -> list[dict[str, Any]]:
    """Two prompts: a video alone (6 frames = 3 temporal patches of 4 x 6), then an image and a video."""
    return [
        sample(tiny, ["watch", ("video", _frames(tiny, 6, 4, 6, 0)), "what moves?"]),
        sample(tiny, ["see", ("image", _image(1)), "then", ("video", _frames(tiny, 4, 4, 4, 2)), "compare"]),
    ]


def _generate(model: Any, inputs: Any, **kwargs: Any) -> Any:
    with torch.no_grad():
        return model.generate(
            **inputs, max_new_tokens=NEW_TOKENS, do_sample=False, output_logits=True, return_dict_in_generate=True,
            **kwargs,
        )


def _pruned_generate(tiny: TinyModel, inputs: Any, config: GPruneConfig) -> tuple[Any, Any]:
    with gprune.pruned(tiny.model, config):
        return _generate(tiny.model, inputs), gprune.last_report(tiny.model)


@pytest.mark.parametrize("window", [1, 2, 0])
def test_keep_one_is_identical_with_images_and_videos(tiny: TinyModel, window: int) -> None:
    inputs = batch(tiny, _mixed(tiny))
    reference = _generate(tiny.model, inputs)
    for positions in ("original", "compact"):
        got, report = _pruned_generate(tiny, inputs, GPruneConfig(keep=1.0, video_window=window, positions=positions))
        assert [r.kind for r in report.images] == ["image", "video", "video"]
        assert report.tokens_after == report.tokens_before
        assert torch.equal(got.sequences, reference.sequences)
        for a, b in zip(got.logits, reference.logits, strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize(("window", "video_keep"), [(1, None), (1, 0.25), (2, 0.5), (0, 5)])
def test_kept_count_is_a_pure_function_of_video_shape_and_config(
    tiny: TinyModel, window: int, video_keep: float | int | None
) -> None:
    inputs = batch(tiny, _mixed(tiny))
    config = GPruneConfig(keep=0.5, video_keep=video_keep, video_window=window)
    _, report = _pruned_generate(tiny, inputs, config)
    videos = [r for r in report.images if r.kind == "video"]
    want_keep = 0.5 if video_keep is None else video_keep
    for r, (t, h, w) in zip(videos, inputs["video_grid_thw"].tolist(), strict=True):
        per_frame = h * w // 4
        assert r.tokens_before == t * per_frame
        assert r.tokens_after == kept_video_tokens(t, per_frame, want_keep, window=window)
        if window == 1:  # every frame keeps its own share
            frame_of = r.kept_indices // per_frame
            assert torch.bincount(frame_of, minlength=t).tolist() == [int(want_keep * per_frame)] * t
    image = next(r for r in report.images if r.kind == "image")
    assert image.tokens_after == image.tokens_before // 2


def test_video_layout_groups() -> None:
    assert [g.tolist() for g in video_layout(3, 2, 1).groups] == [[0, 1], [2, 3], [4, 5]]
    assert [g.tolist() for g in video_layout(3, 2, 2).groups] == [[0, 1, 2, 3], [4, 5]]
    assert [g.tolist() for g in video_layout(3, 2, 0).groups] == [[0, 1, 2, 3, 4, 5]]
    assert kept_video_tokens(8, 100, 0.25) == 8 * 25
    assert kept_video_tokens(8, 100, 0.25, window=0) == 200
    assert kept_video_tokens(8, 100, 64, window=4) == 64
    with pytest.raises(ValueError, match="video_window"):
        GPruneConfig(video_window=-1)
    with pytest.raises(ValueError, match="keep"):
        GPruneConfig(video_keep=0.0)


def _reference_logits(tiny: TinyModel, inputs: Any, report: Any, b: int, positions: str, new: torch.Tensor) -> list:
    """Cache-free logits of sample `b` after each generated token, built without the adapter."""
    model = tiny.model
    ids = inputs["input_ids"]
    placeholders = {"image": model.config.image_token_id, "video": model.config.video_token_id}
    keep = keep_mask_from_report(inputs, report, placeholders)
    kept_positions = reference_positions(model, inputs, keep, compact=positions == "compact")[b]
    outputs = {}
    for kind in ("image", "video"):
        items = [(k, r) for k, r in enumerate(report.images) if r.kind == kind]
        mine = [i for i, (_, r) in enumerate(items) if r.batch_index == b]
        if not mine:
            continue
        grid = inputs[f"{kind}_grid_thw"]
        pixels = torch.split(inputs["pixel_values" if kind == "image" else "pixel_values_videos"],
                             grid.prod(-1).tolist())
        cut = [report.images[items[i][0]].kept_indices for i in mine]
        outputs[kind] = cut_encoder_output(model, torch.cat([pixels[i] for i in mine]), grid[mine], cut)
    last = int(kept_positions.max())
    logits = []
    for step in range(NEW_TOKENS):
        sequence = torch.cat([ids[b][keep[b]], new[:step]]).unsqueeze(0)
        tail = torch.arange(last + 1, last + 1 + step).expand(3, step)
        with torch.no_grad():
            logits.append(model(
                input_ids=sequence,
                attention_mask=torch.ones_like(sequence),
                position_ids=torch.cat([kept_positions, tail], dim=1).unsqueeze(1),
                mm_encoder_outputs=outputs,
                use_cache=False,
            ).logits[0, -1])
    return logits


@pytest.mark.parametrize(("positions", "window"), [("original", 1), ("compact", 2), ("original", 0)])
def test_pruned_decoding_equals_cache_free_recompute(tiny: TinyModel, positions: str, window: int) -> None:
    inputs = batch(tiny, _mixed(tiny))
    config = GPruneConfig(keep=0.5, video_keep=0.3, video_window=window, positions=positions)
    generated, report = _pruned_generate(tiny, inputs, config)
    assert report.tokens_after < report.tokens_before
    prompt = inputs["input_ids"].shape[1]
    assert torch.equal(generated.sequences[:, :prompt], inputs["input_ids"])
    for b in range(2):
        new = generated.sequences[b, prompt:]
        for step, want in enumerate(_reference_logits(tiny, inputs, report, b, positions, new)):
            torch.testing.assert_close(generated.logits[step][b], want, rtol=1e-4, atol=1e-5)


def test_batch_generate_equals_per_sample(tiny: TinyModel) -> None:
    config = GPruneConfig(keep=0.5, video_keep=0.4, video_window=2)
    samples = _mixed(tiny)
    together, batch_report = _pruned_generate(tiny, batch(tiny, samples), config)
    for b, one in enumerate(samples):
        alone, report = _pruned_generate(tiny, batch(tiny, [one]), config)
        assert torch.equal(together.sequences[b, -NEW_TOKENS:], alone.sequences[0, -NEW_TOKENS:])
        for step in range(NEW_TOKENS):
            torch.testing.assert_close(together.logits[step][b], alone.logits[step][0], rtol=1e-4, atol=1e-5)
        mine = [r for r in batch_report.images if r.batch_index == b]
        assert [(r.kind, r.kept_indices.tolist()) for r in mine] == [
            (r.kind, r.kept_indices.tolist()) for r in report.images
        ]


@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_forward_equals_per_sample(tiny: TinyModel, side: str) -> None:
    config = GPruneConfig(keep=0.5, video_keep=0.3, video_window=0)
    samples = _mixed(tiny)
    inputs = batch(tiny, samples, side)
    with gprune.pruned(tiny.model, config), torch.no_grad():
        together = tiny.model(**inputs).logits
        for b, one in enumerate(samples):
            alone = tiny.model(**batch(tiny, [one], side)).logits
            mask = inputs["attention_mask"][b].bool()
            torch.testing.assert_close(together[b][mask], alone[0], rtol=1e-4, atol=1e-5)


def test_video_only_call_is_pruned_and_deepstack_cut() -> None:
    tiny = tiny_qwen("qwen3_vl")
    inputs = batch(tiny, _mixed(tiny)[:1])
    assert "pixel_values" not in inputs
    call = prune_call(get_adapter(tiny.model), dict(inputs), GPruneConfig(keep=0.5), for_generate=True)
    (video,) = call.report.images
    assert video.kind == "video" and video.tokens_after == 3 * 3  # 3 frames of 6 tokens, half of each
    pruned = call.model_kwargs["mm_encoder_outputs"]["video"]
    assert "image" not in call.model_kwargs["mm_encoder_outputs"]
    with torch.no_grad():
        full = tiny.model.model.get_video_features(
            inputs["pixel_values_videos"], inputs["video_grid_thw"], return_dict=True
        )
    assert torch.equal(pruned.pooler_output[0], full.pooler_output[0][video.kept_indices])
    for layer_full, layer_cut in zip(full.deepstack_features, pruned.deepstack_features, strict=True):
        assert torch.equal(layer_cut[0], layer_full[0][video.kept_indices])
    assert int((call.model_kwargs["input_ids"] == tiny.model.config.video_token_id).sum()) == 9


def test_inputs_embeds_generate_with_more_videos_than_prompts(tiny: TinyModel) -> None:
    """generate(inputs_embeds=...) takes its batch size from its first tensor argument; video_grid_thw (one
    row per video) must not be it: one prompt holding two videos still decodes one row, as unpruned."""
    one = sample(tiny, ["two clips", ("video", _frames(tiny, 4, 4, 4, 3)), "and", ("video", _frames(tiny, 2, 2, 4, 4))])
    inputs = batch(tiny, [one])
    assert inputs["video_grid_thw"].shape[0] == 2 and inputs["input_ids"].shape[0] == 1
    with torch.no_grad():
        embeds = tiny.model.get_input_embeddings()(inputs["input_ids"])
    call = {**{k: v for k, v in inputs.items() if k != "input_ids"}, "inputs_embeds": embeds}
    want = _generate(tiny.model, call)
    same, _ = _pruned_generate(tiny, call, GPruneConfig(keep=1.0))
    assert torch.equal(same.sequences, want.sequences)
    for a, b in zip(same.logits, want.logits, strict=True):
        assert torch.equal(a, b)
    pruned, report = _pruned_generate(tiny, call, GPruneConfig(keep=0.5))
    assert report.tokens_after < report.tokens_before
    assert pruned.sequences.shape == want.sequences.shape == (1, NEW_TOKENS)
