"""`gprune.apply` on tiny random-weight Qwen2-VL / Qwen2.5-VL / Qwen3-VL models (transformers 5.23).

Reference values come from the unpruned model, or from a cache-free forward that this file builds
itself: features from the model's own vision tower cut by the reported kept indices, 3-D positions from
the model's own ``get_rope_index`` on the unpruned ids with the kept columns gathered in plain Python.
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
from gprune.integrations.hf_args import cache_keyword, output_cache
from gprune.pipeline import prune_call
from gprune.testing.qwen import QWEN_MODEL_TYPES, VIDEO_PAD, VISION_END, VISION_START, TinyModel, tiny_qwen
from qwen_reference import cut_encoder_output, keep_mask_from_report, reference_positions

NEW_TOKENS = 4


@pytest.fixture(scope="module", params=QWEN_MODEL_TYPES)
def tiny(request: pytest.FixtureRequest) -> TinyModel:
    return tiny_qwen(request.param)


def _image(height: int, width: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype("uint8"))


IMAGES = [_image(60, 90, 0), _image(100, 60, 1), _image(120, 200, 2)]


def _inputs(tiny: TinyModel, prompts: list[tuple[str, int]], images: list[Image.Image], side: str = "left") -> Any:
    tiny.processor.tokenizer.padding_side = side
    text = [tiny.prompt(q, n) for q, n in prompts]
    return tiny.processor(text=text, images=images or None, return_tensors="pt", padding=True)


def _batch_two(tiny: TinyModel, side: str = "left") -> Any:
    """Two prompts of different lengths: one image, then two images of other sizes."""
    return _inputs(tiny, [("what is it?", 1), ("compare", 2)], IMAGES, side)


def _singles(tiny: TinyModel, side: str = "left") -> list[Any]:
    return [_inputs(tiny, [("what is it?", 1)], IMAGES[:1], side), _inputs(tiny, [("compare", 2)], IMAGES[1:], side)]


def _generate(model: Any, inputs: Any, **kwargs: Any) -> Any:
    with torch.no_grad():
        return model.generate(
            **inputs, max_new_tokens=NEW_TOKENS, output_logits=True, return_dict_in_generate=True, **kwargs
        )


def _pruned_generate(tiny: TinyModel, inputs: Any, config: GPruneConfig, **kwargs: Any) -> tuple[Any, Any]:
    with gprune.pruned(tiny.model, config):
        out = _generate(tiny.model, inputs, **{"do_sample": False, **kwargs})
        return out, gprune.last_report(tiny.model)


def _pruned_forward(tiny: TinyModel, inputs: Any, config: GPruneConfig, **kwargs: Any) -> tuple[Any, Any]:
    with gprune.pruned(tiny.model, config), torch.no_grad():
        return tiny.model(**inputs, **kwargs), gprune.last_report(tiny.model)


# --- keep = 1.0 reproduces the unpruned model --------------------------------------------------------


@pytest.mark.parametrize(
    "gen_kwargs",
    [{"do_sample": False}, {"do_sample": False, "num_beams": 2, "num_return_sequences": 2}, {"do_sample": True}],
    ids=["greedy", "beam", "sampling"],
)
def test_keep_one_generate_is_identical(tiny: TinyModel, gen_kwargs: dict) -> None:
    inputs = _batch_two(tiny)
    torch.manual_seed(3)
    reference = _generate(tiny.model, inputs, **gen_kwargs)
    for positions in ("original", "compact"):
        torch.manual_seed(3)
        got, report = _pruned_generate(tiny, inputs, GPruneConfig(keep=1.0, positions=positions), **gen_kwargs)
        assert (
            report.tokens_after
            == report.tokens_before
            == int((inputs["input_ids"] == tiny.model.config.image_token_id).sum())
        )
        assert torch.equal(got.sequences, reference.sequences)
        assert len(got.logits) == NEW_TOKENS
        for a, b in zip(got.logits, reference.logits, strict=True):
            assert torch.equal(a, b)


def test_keep_one_forward_logits_and_loss_are_identical(tiny: TinyModel) -> None:
    inputs = _batch_two(tiny, side="right")
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    with torch.no_grad():
        reference = tiny.model(**inputs, labels=labels)
    got, _ = _pruned_forward(tiny, inputs, GPruneConfig(keep=1.0), labels=labels)
    assert torch.equal(got.logits, reference.logits)
    assert torch.equal(got.loss, reference.loss)


def test_text_only_prompts_pass_through(tiny: TinyModel) -> None:
    inputs = _inputs(tiny, [("no image here", 0), ("nor here, longer", 0)], [])
    reference = _generate(tiny.model, inputs, do_sample=False)
    got, report = _pruned_generate(tiny, inputs, GPruneConfig(keep=0.3))
    assert report is None
    assert torch.equal(got.sequences, reference.sequences)


# --- pruned decoding equals an independent cache-free recompute ----------------------------------------


@pytest.mark.parametrize("positions", ["original", "compact"])
def test_pruned_cached_decoding_equals_cache_free_recompute(tiny: TinyModel, positions: str) -> None:
    inputs = _batch_two(tiny)
    model = tiny.model
    generated, report = _pruned_generate(tiny, inputs, GPruneConfig(keep=0.4, positions=positions))
    sizes = (inputs["image_grid_thw"].prod(-1) // 4).tolist()  # merged 2x2 patches per image
    assert [r.tokens_before for r in report.images] == sizes
    assert [r.tokens_after for r in report.images] == [int(0.4 * n) for n in sizes]
    prompt_length = inputs["input_ids"].shape[1]
    assert generated.sequences.shape == (2, prompt_length + NEW_TOKENS)
    assert torch.equal(generated.sequences[:, :prompt_length], inputs["input_ids"])

    keep_mask = keep_mask_from_report(inputs, report, {"image": model.config.image_token_id})
    ref_positions = reference_positions(model, inputs, keep_mask, compact=positions == "compact")
    grid = inputs["image_grid_thw"]
    pixel_rows = torch.split(inputs["pixel_values"], grid.prod(-1).tolist())
    for b, images in enumerate([[0], [1, 2]]):
        ids = inputs["input_ids"][b][keep_mask[b]]
        new = generated.sequences[b, prompt_length:]
        encoder_output = cut_encoder_output(
            model,
            torch.cat([pixel_rows[k] for k in images]),
            grid[images],
            [report.images[k].kept_indices for k in images],
        )
        last = int(ref_positions[b].max())
        for step in range(NEW_TOKENS):
            sequence = torch.cat([ids, new[:step]]).unsqueeze(0)
            tail = torch.arange(last + 1, last + 1 + step).expand(3, step)
            position_ids = torch.cat([ref_positions[b], tail], dim=1).unsqueeze(1)
            with torch.no_grad():
                logits = model(
                    input_ids=sequence,
                    attention_mask=torch.ones_like(sequence),
                    position_ids=position_ids,
                    mm_encoder_outputs={"image": encoder_output},
                    use_cache=False,
                ).logits[0, -1]
            torch.testing.assert_close(generated.logits[step][b], logits, rtol=1e-4, atol=1e-5)


# --- batches, padding, several images ------------------------------------------------------------------


@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_forward_equals_per_sample(tiny: TinyModel, side: str) -> None:
    config = GPruneConfig(keep=0.5)
    batch = _batch_two(tiny, side)
    batch_out, batch_report = _pruned_forward(tiny, batch, config)
    assert batch_out.logits.shape[:2] == batch["input_ids"].shape  # the original token layout
    for b, single in enumerate(_singles(tiny, side)):
        out, report = _pruned_forward(tiny, single, config)
        mask = batch["attention_mask"][b].bool()
        torch.testing.assert_close(batch_out.logits[b][mask], out.logits[0], rtol=1e-4, atol=1e-5)
        batch_kept = [r.kept_indices for r in batch_report.images if r.batch_index == b]
        for got, want in zip(batch_kept, [r.kept_indices for r in report.images], strict=True):
            assert torch.equal(got, want)


@pytest.mark.parametrize("positions", ["original", "compact"])
def test_batch_generate_equals_per_sample(tiny: TinyModel, positions: str) -> None:
    config = GPruneConfig(keep=0.5, positions=positions)
    batch, _ = _pruned_generate(tiny, _batch_two(tiny), config)
    for b, single in enumerate(_singles(tiny)):
        got, _ = _pruned_generate(tiny, single, config)
        assert torch.equal(batch.sequences[b, -NEW_TOKENS:], got.sequences[0, -NEW_TOKENS:])
        for step in range(NEW_TOKENS):
            torch.testing.assert_close(batch.logits[step][b], got.logits[step][0], rtol=1e-4, atol=1e-5)


def test_three_images_in_one_prompt(tiny: TinyModel) -> None:
    inputs = _inputs(tiny, [("which differs?", 3)], IMAGES)
    out, report = _pruned_generate(tiny, inputs, GPruneConfig(keep=3))
    sizes = (inputs["image_grid_thw"].prod(-1) // 4).tolist()
    assert [(r.batch_index, r.tokens_before, r.tokens_after) for r in report.images] == [(0, n, 3) for n in sizes]
    assert out.sequences.shape[1] == inputs["input_ids"].shape[1] + NEW_TOKENS


def test_image_and_video_in_one_prompt_are_both_pruned(tiny: TinyModel) -> None:
    """An image and a hand-built one-frame-pair video in one prompt: both are pruned; keep=1 is exact.

    On Qwen3-VL the video features carry DeepStack features too, merged with the pruned image ones.
    More on videos: tests/test_hf_qwen_video.py.
    """
    inputs = dict(_inputs(tiny, [("and the video", 1)], IMAGES[:1]))
    video = tiny.processor.tokenizer(VISION_START + VIDEO_PAD * 6 + VISION_END + "?", return_tensors="pt")
    video_type = (video["input_ids"] == tiny.model.config.video_token_id).long() * 2
    inputs["input_ids"] = torch.cat([inputs["input_ids"], video["input_ids"]], dim=1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], video_type], dim=1)
    inputs["video_grid_thw"] = torch.tensor([[1, 4, 6]])  # one temporal patch of 4 x 6 -> 6 merged tokens
    patch = tiny.model.config.vision_config.patch_size
    generator = torch.Generator().manual_seed(0)
    inputs["pixel_values_videos"] = torch.randn(24, 3 * 2 * patch * patch, generator=generator)
    reference = _generate(tiny.model, inputs, do_sample=False)
    same, _ = _pruned_generate(tiny, inputs, GPruneConfig(keep=1.0))
    assert torch.equal(same.sequences, reference.sequences)
    for a, b in zip(same.logits, reference.logits, strict=True):
        assert torch.equal(a, b)
    out, report = _pruned_generate(tiny, inputs, GPruneConfig(keep=0.5))
    assert [(r.kind, r.tokens_before, r.tokens_after) for r in report.images] == [
        ("image", report.images[0].tokens_before, report.images[0].tokens_before // 2),
        ("video", 6, 3),
    ]
    assert out.sequences.shape[1] == inputs["input_ids"].shape[1] + NEW_TOKENS


# --- DeepStack, rope deltas, kept counts, dtypes, errors -----------------------------------------------


def test_deepstack_features_cut_with_the_image_mask() -> None:
    tiny = tiny_qwen("qwen3_vl")
    inputs = _batch_two(tiny)
    call = prune_call(get_adapter(tiny.model), dict(inputs), GPruneConfig(keep=0.5), for_generate=True)
    pruned = call.model_kwargs["mm_encoder_outputs"]["image"]
    with torch.no_grad():
        full = tiny.model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"], return_dict=True)
    assert len(pruned.deepstack_features) == len(tiny.model.config.vision_config.deepstack_visual_indexes) == 2
    for layer_full, layer_pruned in zip(full.deepstack_features, pruned.deepstack_features, strict=True):
        for image, full_feat, cut in zip(call.report.images, layer_full, layer_pruned, strict=True):
            assert cut.shape == (image.tokens_after, full_feat.shape[1])
            assert torch.equal(cut, full_feat[image.kept_indices])
    # and the model uses them: dropping the DeepStack features changes the logits
    kwargs = {**call.model_kwargs, "image_grid_thw": inputs["image_grid_thw"]}
    with torch.no_grad():
        with_deepstack = tiny.model(**kwargs).logits
        pruned.deepstack_features = [tuple(torch.zeros_like(f) for f in layer) for layer in pruned.deepstack_features]
        without = tiny.model(**kwargs).logits
    assert not torch.allclose(with_deepstack, without)


@pytest.mark.parametrize("positions", ["original", "compact"])
def test_rope_deltas_continue_after_the_last_kept_position(tiny: TinyModel, positions: str) -> None:
    """A manual decoding step that lets the model place the new token from its cached ``rope_deltas``.

    Without padding and without an attention mask: on transformers 5.23 the rope-delta fallback builds
    positions for the whole mask length when a mask is given, which fails unpruned as well.
    """
    inputs = _inputs(tiny, [("compare", 2)], IMAGES[1:])
    model = tiny.model
    config = GPruneConfig(keep=0.4, positions=positions)
    next_token = torch.full((1, 1), 65)
    with gprune.pruned(model, config), torch.no_grad():
        prefill = model(**inputs, use_cache=True)
        step = model(input_ids=next_token, **{cache_keyword(model.forward): output_cache(prefill)}).logits[:, -1]
        report = gprune.last_report(model)
    keep_mask = keep_mask_from_report(inputs, report, {"image": model.config.image_token_id})
    mrope = reference_positions(model, inputs, keep_mask, compact=positions == "compact")[0].unsqueeze(1)
    after = torch.full((3, 1, 1), int(mrope.max()) + 1)
    sequence = torch.cat([inputs["input_ids"][keep_mask].unsqueeze(0), next_token], dim=1)
    encoder_output = cut_encoder_output(
        model, inputs["pixel_values"], inputs["image_grid_thw"], [r.kept_indices for r in report.images]
    )
    with torch.no_grad():
        full = model(
            input_ids=sequence,
            attention_mask=torch.ones_like(sequence),
            position_ids=torch.cat([mrope, after], dim=2),
            mm_encoder_outputs={"image": encoder_output},
            use_cache=False,
        ).logits[:, -1]
    torch.testing.assert_close(step, full, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size", [(60, 90), (100, 60), (120, 200), (500, 30), (28, 28)])
def test_kept_count_is_a_pure_function_of_size_and_keep(tiny: TinyModel, size: tuple[int, int]) -> None:
    inputs = _inputs(tiny, [("q", 1)], [_image(*size, seed=3)])
    processor = tiny.processor.image_processor
    by_pixels = {"min_pixels": processor.size["shortest_edge"], "max_pixels": processor.size["longest_edge"]}
    real_before = int((inputs["input_ids"] == tiny.model.config.image_token_id).sum())
    assert gprune.image_layout(tiny.model, size, image_processor=processor).length == real_before
    assert gprune.image_layout(tiny.model.config, size, **by_pixels).length == real_before
    for keep in (0.5, 2):
        _, report = _pruned_forward(tiny, inputs, GPruneConfig(keep=keep))
        assert report.tokens_before == real_before
        assert gprune.kept_tokens(tiny.model, size, keep, image_processor=processor) == report.tokens_after


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_keep_one_is_identical_and_pruning_runs(dtype: torch.dtype) -> None:
    tiny = tiny_qwen("qwen2_5_vl", dtype=dtype)
    inputs = _batch_two(tiny)
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    reference = _generate(tiny.model, inputs, do_sample=False)
    same, _ = _pruned_generate(tiny, inputs, GPruneConfig(keep=1.0))
    assert torch.equal(same.sequences, reference.sequences)
    out, report = _pruned_generate(tiny, inputs, GPruneConfig(keep=0.5))
    assert report.tokens_after < report.tokens_before
    assert all(torch.isfinite(step).all() for step in out.logits)


def test_missing_mm_token_type_ids_is_a_clear_error(tiny: TinyModel) -> None:
    inputs = dict(_batch_two(tiny))
    del inputs["mm_token_type_ids"]
    with pytest.raises(ValueError, match="mm_token_type_ids"), gprune.pruned(tiny.model, GPruneConfig(keep=0.5)):
        tiny.model.generate(**inputs, max_new_tokens=2)


def test_saved_tiny_model_reloads_with_identical_pruned_output(tmp_path: Any) -> None:
    from transformers import AutoModelForImageTextToText

    from gprune.testing.qwen import processor_from_pretrained

    tiny = tiny_qwen("qwen2_5_vl")
    tiny.model.save_pretrained(tmp_path)
    tiny.processor.save_pretrained(tmp_path)
    model = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    reloaded = TinyModel(model, processor_from_pretrained(tmp_path), image_token=tiny.image_token)
    config = GPruneConfig(keep=0.5)
    want, _ = _pruned_generate(tiny, _batch_two(tiny), config)
    got, _ = _pruned_generate(reloaded, _batch_two(reloaded), config)
    assert torch.equal(got.sequences, want.sequences)
