"""gprune's vLLM plugin on tiny Qwen2.5-VL and Qwen2-VL: counts, kept features, unpruned mRoPE positions, greedy
identity, batching. Every test runs on both families (module fixtures parametrized by model type)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

vllm = pytest.importorskip("vllm", reason="vLLM is not installed here (bash scripts/test_vllm.sh runs these tests)")

from tiny_models import save_qwen2_5_vl  # noqa: E402
from vllm_helpers import KEEP, EmbedRecorder, PositionRecorder, engine_model, make_engine  # noqa: E402

from gprune.integrations.vllm.qwen_vl import (  # noqa: E402
    OFFSET_CHANNELS,
    GPruneQwen2_5_VLForConditionalGeneration,
    GPruneQwen2VLForConditionalGeneration,
    image_layout,
)
from gprune.layouts import kept_token_count, select_in_layouts, single_group_layout  # noqa: E402

SIZES = [(100, 150), (60, 60), (140, 90), (56, 200)]  # (height, width)
SLOT = "<|vision_start|><|image_pad|><|vision_end|>"
GREEDY = vllm.SamplingParams(max_tokens=6, temperature=0.0)


def image(height: int, width: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def request(images: list[Image.Image]) -> dict[str, Any]:
    prompt = "USER: " + SLOT * len(images) + "What is shown? ASSISTANT:"
    return {"prompt": prompt, "multi_modal_data": {"image": images if len(images) > 1 else images[0]}}


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen2_vl"])
def checkpoint(tmp_models: Path, request: pytest.FixtureRequest) -> Path:
    return save_qwen2_5_vl(tmp_models / request.param, model_type=request.param)


def image_token_id(llm: Any) -> int:
    return int(engine_model(llm).config.image_token_id)


def test_pruned_class_runs(plain: Any, pruned: Any) -> None:
    pruning_classes = (GPruneQwen2_5_VLForConditionalGeneration, GPruneQwen2VLForConditionalGeneration)
    assert isinstance(engine_model(pruned), pruning_classes)
    assert engine_model(pruned).gprune is not None and engine_model(plain).gprune is None


def test_prompt_keeps_text_and_the_kept_count_per_image(plain: Any, pruned: Any) -> None:
    token = image_token_id(plain)
    for i, size in enumerate(SIZES):
        req = request([image(*size, i)])
        full = plain.generate([req], GREEDY, use_tqdm=False)[0].prompt_token_ids
        short = pruned.generate([req], GREEDY, use_tqdm=False)[0].prompt_token_ids
        n = full.count(token)
        assert short.count(token) == kept_token_count(single_group_layout(n), KEEP) < n
        assert [t for t in full if t != token] == [t for t in short if t != token]
        assert len(full) - len(short) == n - kept_token_count(single_group_layout(n), KEEP)


def unpruned_embeddings(model: Any, kwargs: dict[str, Any]) -> list[torch.Tensor]:
    """vLLM's own `embed_multimodal` on the same inputs (the plugin's class without a setting is vLLM's)."""
    setting, model.gprune = model.gprune, None
    try:
        return list(model.embed_multimodal(**kwargs))
    finally:
        model.gprune = setting


def test_fed_tokens_are_the_kept_features_with_their_offsets(pruned: Any) -> None:
    model = engine_model(pruned)
    merge = model.visual.spatial_merge_size
    requests = [request([image(*size, 20 + i)]) for i, size in enumerate(SIZES)]
    requests.append(request([image(*SIZES[1], 30), image(*SIZES[2], 31), image(*SIZES[3], 32)]))
    with EmbedRecorder(model) as rec:
        pruned.generate(requests, GREEDY, use_tqdm=False)
    assert sum(len(out) for _, out in rec.calls) == len(SIZES) + 3
    for kwargs, out in rec.calls:
        unpruned = unpruned_embeddings(model, kwargs)
        grids = kwargs["image_grid_thw"].tolist()
        layouts = [image_layout(g, merge) for g in grids]
        kept = select_in_layouts(unpruned, layouts, KEEP, method="gprune", **model.gprune.selector_params())
        for feats, idx, got, grid in zip(unpruned, kept, out, grids, strict=True):
            torch.testing.assert_close(got[:, :-OFFSET_CHANNELS], feats[idx], rtol=0, atol=0)
            h, w = grid[1] // merge, grid[2] // merge
            offsets = torch.stack([torch.zeros_like(idx), idx // w, idx % w], dim=1)
            assert int(idx.max()) < h * w
            torch.testing.assert_close(got[:, -OFFSET_CHANNELS:].long(), offsets)


def _runs(mask: torch.Tensor) -> list[torch.Tensor]:
    """Indices of each contiguous run of True in `mask`, in order."""
    where = torch.nonzero(mask).squeeze(1)
    breaks = torch.nonzero(where.diff() > 1).squeeze(1) + 1
    return list(torch.tensor_split(where, breaks.tolist()))


@pytest.mark.parametrize("count", [1, 2])
def test_kept_tokens_keep_their_unpruned_positions(plain: Any, pruned: Any, count: int) -> None:
    """Prefill positions = the unpruned prompt's at the kept tokens; decoding continues where unpruned does."""
    req = request([image(*SIZES[2 * i], 60 + 10 * count + i) for i in range(count)])  # new: no encoder cache hit
    token = image_token_id(plain)
    with PositionRecorder(engine_model(plain).language_model.model) as full_pos:
        full = plain.generate([req], GREEDY, use_tqdm=False)[0]
    model = engine_model(pruned)
    merge = model.visual.spatial_merge_size
    with PositionRecorder(model.language_model.model) as short_pos, EmbedRecorder(model) as rec:
        short = pruned.generate([req], GREEDY, use_tqdm=False)[0]
    ids = torch.tensor(full.prompt_token_ids)
    keep_mask = ids != token
    (kwargs, outputs), = rec.calls
    grids = kwargs["image_grid_thw"].tolist()
    runs = _runs(ids == token)
    assert len(runs) == len(outputs) == len(grids) == count
    for run, out, grid in zip(runs, outputs, grids, strict=True):
        offsets = out[:, -OFFSET_CHANNELS:].long()
        keep_mask[run[offsets[:, 1] * (grid[2] // merge) + offsets[:, 2]]] = True
    prefill = short_pos.steps[0]
    assert prefill.shape[1] == len(short.prompt_token_ids) == int(keep_mask.sum())
    torch.testing.assert_close(prefill, full_pos.steps[0][:, keep_mask], rtol=0, atol=0)
    torch.testing.assert_close(short_pos.steps[1], full_pos.steps[1], rtol=0, atol=0)  # first decode step


def test_concurrent_requests_each_get_their_own_positions(pruned: Any) -> None:
    """One engine step over several requests: each request's rows get its own images' offsets."""
    model = engine_model(pruned)
    reqs = [request([image(*SIZES[i], 90 + i)]) for i in range(3)]
    reqs.append(request([image(*SIZES[3], 93), image(*SIZES[0], 94)]))
    with PositionRecorder(model.language_model.model) as together:
        outs = pruned.generate(reqs, GREEDY, use_tqdm=False)
    lengths = [len(o.prompt_token_ids) for o in outs]
    assert together.steps[0].shape[1] == sum(lengths)  # all prompts in one prefill step
    alone = []
    for req in reqs:  # the encoder cache now serves these images: the same rows, offsets included
        with PositionRecorder(model.language_model.model) as rec:
            pruned.generate([req], GREEDY, use_tqdm=False)
        alone.append(rec.steps[0])
    torch.testing.assert_close(together.steps[0], torch.cat(alone, dim=1), rtol=0, atol=0)


def test_keep_one_generates_what_plain_vllm_generates(plain: Any, checkpoint: Path) -> None:
    """keep 1.0 runs the whole offset path (counts, channels, positions) and must change nothing."""
    requests = [request([image(*size, 70 + i)]) for i, size in enumerate(SIZES)]
    requests.append(request([image(*SIZES[0], 80), image(*SIZES[3], 81)]))
    full = plain.generate(requests, GREEDY, use_tqdm=False)
    identity = make_engine(checkpoint, {"keep": 1.0}, limit_mm_per_prompt={"image": 3})
    same = identity.generate(requests, GREEDY, use_tqdm=False)
    for a, b in zip(full, same, strict=True):
        assert a.prompt_token_ids == b.prompt_token_ids
        assert a.outputs[0].token_ids == b.outputs[0].token_ids


def test_compact_positions_are_refused_at_start_up(checkpoint: Path) -> None:
    with pytest.raises(Exception, match="supports positions='original' for qwen2"):
        make_engine(checkpoint, {"keep": 0.5, "positions": "compact"})
