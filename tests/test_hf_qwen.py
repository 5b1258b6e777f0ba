"""Qwen2-VL / Qwen2.5-VL / Qwen3-VL pruning on tiny random-weight models (transformers 5.23).

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

from gprune.adapters import get_adapter
from gprune.adapters.qwen_vl import QwenVLAdapter
from gprune.config import GPruneConfig
from gprune.pipeline import prune_call
from gprune.testing.qwen import QWEN_MODEL_TYPES, TinyModel, tiny_qwen

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
    return tiny.processor(text=text, images=images, return_tensors="pt", padding=True)


def _pruned_kwargs(tiny: TinyModel, inputs: Any, config: GPruneConfig, *, for_generate: bool) -> tuple[dict, Any]:
    adapter = get_adapter(tiny.model)
    call = prune_call(adapter, dict(inputs), config, for_generate=for_generate)
    rest = {k: v for k, v in inputs.items() if k not in adapter.image_input_keys and k not in call.model_kwargs}
    return {**rest, **call.model_kwargs}, call


def _generate(model: Any, **kwargs: Any) -> Any:
    with torch.no_grad():
        return model.generate(
            **kwargs, max_new_tokens=NEW_TOKENS, do_sample=False, output_logits=True, return_dict_in_generate=True
        )


def _batch_two(tiny: TinyModel, side: str = "left") -> Any:
    """Two prompts of different lengths: one image, then two images of other sizes."""
    return _inputs(tiny, [("what is it?", 1), ("compare", 2)], IMAGES, side)


# --- keep = 1.0 reproduces the unpruned model --------------------------------------------------------


@pytest.mark.parametrize("positions", ["original", "compact"])
def test_keep_one_generate_is_identical(tiny: TinyModel, positions: str) -> None:
    inputs = _batch_two(tiny)
    reference = _generate(tiny.model, **inputs)
    kwargs, _ = _pruned_kwargs(tiny, inputs, GPruneConfig(keep=1.0, positions=positions), for_generate=True)
    got = _generate(tiny.model, **kwargs)
    assert torch.equal(got.sequences, reference.sequences)
    assert len(got.logits) == len(reference.logits) == NEW_TOKENS
    for a, b in zip(got.logits, reference.logits, strict=True):
        assert torch.equal(a, b)


def test_keep_one_forward_logits_are_identical(tiny: TinyModel) -> None:
    inputs = _batch_two(tiny, side="right")
    with torch.no_grad():
        reference = tiny.model(**inputs).logits
        kwargs, call = _pruned_kwargs(tiny, inputs, GPruneConfig(keep=1.0), for_generate=False)
        got = tiny.model(**kwargs).logits
    assert call.report.tokens_after == call.report.tokens_before
    assert torch.equal(got, reference)


def test_keep_one_beam_search_is_identical() -> None:
    tiny = tiny_qwen("qwen3_vl")  # beam expansion must repeat the DeepStack features too
    inputs = _batch_two(tiny)
    with torch.no_grad():
        reference = tiny.model.generate(**inputs, max_new_tokens=NEW_TOKENS, num_beams=2, do_sample=False)
        kwargs, _ = _pruned_kwargs(tiny, inputs, GPruneConfig(keep=1.0), for_generate=True)
        got = tiny.model.generate(**kwargs, max_new_tokens=NEW_TOKENS, num_beams=2, do_sample=False)
    assert torch.equal(got, reference)


# --- pruned decoding equals an independent cache-free recompute ----------------------------------------


def _reference_positions(model: Any, inputs: Any, keep_mask: torch.Tensor, compact: bool) -> list[torch.Tensor]:
    """Per sample, the (3, n_kept) positions of the kept, attended tokens, built without the adapter."""
    mrope, _ = model.model.get_rope_index(
        inputs["input_ids"],
        inputs["mm_token_type_ids"],
        image_grid_thw=inputs["image_grid_thw"],
        attention_mask=inputs["attention_mask"],
    )
    out = []
    for b in range(keep_mask.shape[0]):
        columns = [j for j in range(keep_mask.shape[1]) if keep_mask[b, j] and inputs["attention_mask"][b, j]]
        kept = mrope[:, b, columns]
        if compact:
            used = sorted({int(v) for v in kept.flatten()})
            rank = {v: used[0] + i for i, v in enumerate(used)}
            kept = torch.tensor([[rank[int(v)] for v in row] for row in kept])
        out.append(kept)
    return out


def _keep_mask_from_report(inputs: Any, image_token_id: int, report: Any) -> torch.Tensor:
    ids = inputs["input_ids"]
    keep = torch.ones_like(ids, dtype=torch.bool)
    cursor = {b: 0 for b in range(ids.shape[0])}
    placeholders = {b: (ids[b] == image_token_id).nonzero().flatten().tolist() for b in range(ids.shape[0])}
    for image in report.images:
        b = image.batch_index
        columns = placeholders[b][cursor[b] : cursor[b] + image.tokens_before]
        cursor[b] += image.tokens_before
        kept = set(image.kept_indices.tolist())
        for i, column in enumerate(columns):
            keep[b, column] = i in kept
    return keep


def _cut_encoder_output(model: Any, pixel_values: torch.Tensor, grid: torch.Tensor, kept: list[torch.Tensor]) -> Any:
    with torch.no_grad():
        full = model.model.get_image_features(pixel_values, grid, return_dict=True)
    fields = {"pooler_output": tuple(f[k] for f, k in zip(full.pooler_output, kept, strict=True))}
    if getattr(full, "deepstack_features", None) is not None:
        fields["deepstack_features"] = [
            tuple(f[k] for f, k in zip(layer, kept, strict=True)) for layer in full.deepstack_features
        ]
    return type(full)(**fields)


@pytest.mark.parametrize("positions", ["original", "compact"])
def test_pruned_cached_decoding_equals_cache_free_recompute(tiny: TinyModel, positions: str) -> None:
    inputs = _batch_two(tiny)
    model = tiny.model
    kwargs, call = _pruned_kwargs(tiny, inputs, GPruneConfig(keep=0.4, positions=positions), for_generate=True)
    report = call.report
    sizes = (inputs["image_grid_thw"].prod(-1) // 4).tolist()  # merged 2x2 patches per image
    assert [r.tokens_before for r in report.images] == sizes
    assert [r.tokens_after for r in report.images] == [int(0.4 * n) for n in sizes]
    generated = _generate(model, **kwargs)
    prompt_length = kwargs["input_ids"].shape[1]
    assert generated.sequences.shape == (2, prompt_length + NEW_TOKENS)

    keep_mask = _keep_mask_from_report(inputs, model.config.image_token_id, report)
    ref_positions = _reference_positions(model, inputs, keep_mask, compact=positions == "compact")
    per_sample_images = {0: [0], 1: [1, 2]}
    grid = inputs["image_grid_thw"]
    patches = (grid.prod(-1)).tolist()
    pixel_rows = torch.split(inputs["pixel_values"], patches)
    for b in range(2):
        ids = inputs["input_ids"][b][keep_mask[b] & inputs["attention_mask"][b].bool()]
        new = generated.sequences[b, prompt_length:]
        images = per_sample_images[b]
        encoder_output = _cut_encoder_output(
            model,
            torch.cat([pixel_rows[k] for k in images]),
            grid[images],
            [report.images[k].kept_indices for k in images],
        )
        for step in range(NEW_TOKENS):
            sequence = torch.cat([ids, new[:step]]).unsqueeze(0)
            last = int(ref_positions[b].max())
            tail = torch.arange(last + 1, last + 1 + step).expand(3, step)
            pos = torch.cat([ref_positions[b], tail], dim=1).unsqueeze(1)
            with torch.no_grad():
                logits = model(
                    input_ids=sequence,
                    attention_mask=torch.ones_like(sequence),
                    position_ids=pos,
                    mm_encoder_outputs={"image": encoder_output},
                    use_cache=False,
                ).logits[0, -1]
            torch.testing.assert_close(generated.logits[step][b], logits, rtol=1e-4, atol=1e-5)


# --- batches, padding, several images ------------------------------------------------------------------


@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_forward_equals_per_sample(tiny: TinyModel, side: str) -> None:
    config = GPruneConfig(keep=0.5)
    batch = _batch_two(tiny, side)
    singles = [_inputs(tiny, [("what is it?", 1)], IMAGES[:1], side), _inputs(tiny, [("compare", 2)], IMAGES[1:], side)]
    with torch.no_grad():
        kwargs, call = _pruned_kwargs(tiny, batch, config, for_generate=False)
        batch_logits = tiny.model(**kwargs).logits
        for b, single in enumerate(singles):
            single_kwargs, single_call = _pruned_kwargs(tiny, single, config, for_generate=False)
            logits = tiny.model(**single_kwargs).logits[0]
            mask = kwargs["attention_mask"][b].bool()
            torch.testing.assert_close(batch_logits[b][mask], logits, rtol=1e-4, atol=1e-5)
            batch_kept = [r.kept_indices for r in call.report.images if r.batch_index == b]
            for got, want in zip(batch_kept, [r.kept_indices for r in single_call.report.images], strict=True):
                assert torch.equal(got, want)


def test_batch_generate_equals_per_sample(tiny: TinyModel) -> None:
    config = GPruneConfig(keep=0.5)
    batch = _generate(tiny.model, **_pruned_kwargs(tiny, _batch_two(tiny), config, for_generate=True)[0])
    singles = [_inputs(tiny, [("what is it?", 1)], IMAGES[:1]), _inputs(tiny, [("compare", 2)], IMAGES[1:])]
    for b, single in enumerate(singles):
        got = _generate(tiny.model, **_pruned_kwargs(tiny, single, config, for_generate=True)[0])
        assert torch.equal(batch.sequences[b, -NEW_TOKENS:], got.sequences[0, -NEW_TOKENS:])
        for step in range(NEW_TOKENS):
            torch.testing.assert_close(batch.logits[step][b], got.logits[step][0], rtol=1e-4, atol=1e-5)


def test_three_images_in_one_prompt(tiny: TinyModel) -> None:
    inputs = _inputs(tiny, [("which differs?", 3)], IMAGES)
    kwargs, call = _pruned_kwargs(tiny, inputs, GPruneConfig(keep=3), for_generate=True)
    sizes = (inputs["image_grid_thw"].prod(-1) // 4).tolist()
    assert [(r.batch_index, r.tokens_before, r.tokens_after) for r in call.report.images] == [(0, n, 3) for n in sizes]
    image_tokens = int((kwargs["input_ids"] == tiny.model.config.image_token_id).sum())
    assert image_tokens == 9
    assert kwargs["input_ids"].shape[1] == inputs["input_ids"].shape[1] - (sum(sizes) - 9)
    out = _generate(tiny.model, **kwargs)
    assert out.sequences.shape[1] == kwargs["input_ids"].shape[1] + NEW_TOKENS


# --- DeepStack, rope deltas, kept counts, errors -------------------------------------------------------


def test_deepstack_features_cut_with_the_image_mask() -> None:
    tiny = tiny_qwen("qwen3_vl")
    inputs = _batch_two(tiny)
    kwargs, call = _pruned_kwargs(tiny, inputs, GPruneConfig(keep=0.5), for_generate=True)
    pruned = kwargs["mm_encoder_outputs"]["image"]
    with torch.no_grad():
        full = tiny.model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"], return_dict=True)
    assert len(pruned.deepstack_features) == len(tiny.model.config.vision_config.deepstack_visual_indexes) == 2
    for layer_full, layer_pruned in zip(full.deepstack_features, pruned.deepstack_features, strict=True):
        for image, full_feat, cut in zip(call.report.images, layer_full, layer_pruned, strict=True):
            assert cut.shape == (image.tokens_after, full_feat.shape[1])
            assert torch.equal(cut, full_feat[image.kept_indices])
    # and the model uses them: dropping the DeepStack features changes the logits
    with torch.no_grad():
        with_deepstack = tiny.model(**kwargs).logits
        kwargs["mm_encoder_outputs"]["image"].deepstack_features = [
            tuple(torch.zeros_like(f) for f in layer) for layer in pruned.deepstack_features
        ]
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
    kwargs, _ = _pruned_kwargs(tiny, inputs, GPruneConfig(keep=0.4, positions=positions), for_generate=False)
    next_token = torch.full((1, 1), 65)
    with torch.no_grad():
        prefill = model(**kwargs, use_cache=True)
        step = model(input_ids=next_token, past_key_values=prefill.past_key_values).logits[:, -1]
        mrope = kwargs["position_ids"][1:]
        after = mrope.amax(dim=(0, 2)).view(1, 1, 1).expand(3, 1, 1) + 1
        sequence = torch.cat([kwargs["input_ids"], next_token], dim=1)
        full = model(
            input_ids=sequence,
            attention_mask=torch.ones_like(sequence),
            position_ids=torch.cat([mrope, after], dim=2),
            mm_encoder_outputs=kwargs["mm_encoder_outputs"],
            use_cache=False,
        ).logits[:, -1]
    torch.testing.assert_close(step, full, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size", [(60, 90), (100, 60), (120, 200), (500, 30), (28, 28)])
def test_image_layout_matches_the_processor(tiny: TinyModel, size: tuple[int, int]) -> None:
    inputs = _inputs(tiny, [("q", 1)], [_image(*size, seed=3)])
    real = int((inputs["input_ids"] == tiny.model.config.image_token_id).sum())
    processor = tiny.processor.image_processor
    exact = QwenVLAdapter.image_layout(tiny.model.config, size, image_processor=processor)
    by_pixels = QwenVLAdapter.image_layout(
        tiny.model.config, size, min_pixels=processor.size["shortest_edge"], max_pixels=processor.size["longest_edge"]
    )
    assert exact.length == by_pixels.length == real


def test_missing_mm_token_type_ids_is_a_clear_error(tiny: TinyModel) -> None:
    inputs = dict(_batch_two(tiny))
    del inputs["mm_token_type_ids"]
    with pytest.raises(ValueError, match="mm_token_type_ids"):
        prune_call(get_adapter(tiny.model), inputs, GPruneConfig(keep=0.5), for_generate=True)
