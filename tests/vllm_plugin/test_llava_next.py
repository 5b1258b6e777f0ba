"""gprune's vLLM plugin on a tiny LLaVA-NeXT: counts, selection, greedy identity, batching, bad config."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

vllm = pytest.importorskip("vllm", reason="vLLM is not installed here (bash scripts/test_vllm.sh runs these tests)")

from tiny_models import save_llava_next  # noqa: E402
from vllm_helpers import KEEP, EmbedRecorder, engine_model, make_engine  # noqa: E402

from gprune.integrations.vllm.llava_next import GPruneLlavaNextForConditionalGeneration, image_layout  # noqa: E402
from gprune.layouts import kept_token_count, select_in_layouts  # noqa: E402

SIZES = [(40, 60), (70, 30), (32, 32), (90, 50)]  # (height, width): 1x2, 2x1, 1x1 and 1x3-like grids


def image(height: int, width: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def request(images: list[Image.Image]) -> dict[str, Any]:
    prompt = "USER: " + "<image>\n" * len(images) + "What is shown? ASSISTANT:"
    return {"prompt": prompt, "multi_modal_data": {"image": images if len(images) > 1 else images[0]}}


GREEDY = vllm.SamplingParams(max_tokens=6, temperature=0.0)


@pytest.fixture(scope="module")
def checkpoint(tmp_models: Path) -> Path:
    return save_llava_next(tmp_models / "llava_next")


def test_plugin_is_discovered_and_its_class_runs(plain: Any, pruned: Any) -> None:
    names = {ep.name: ep.value for ep in entry_points(group="vllm.general_plugins")}
    assert names.get("gprune") == "gprune.integrations.vllm:register"
    assert isinstance(engine_model(pruned), GPruneLlavaNextForConditionalGeneration)
    assert engine_model(plain).gprune is None  # no hf_overrides: behaves as vLLM's own class


def test_prompt_shrinks_by_the_pruned_visual_tokens(plain: Any, pruned: Any, checkpoint: Path) -> None:
    config = engine_model(pruned).config
    requests = [request([image(h, w, i)]) for i, (h, w) in enumerate(SIZES)]
    requests.append(request([image(*SIZES[0], 10), image(*SIZES[3], 11)]))
    sizes_per_request = [[s] for s in SIZES] + [[SIZES[0], SIZES[3]]]
    full = plain.generate(requests, GREEDY, use_tqdm=False)
    short = pruned.generate(requests, GREEDY, use_tqdm=False)
    for a, b, sizes in zip(full, short, sizes_per_request, strict=True):
        layouts = [image_layout(config, h, w) for h, w in sizes]
        removed = sum(lay.length - kept_token_count(lay, KEEP) for lay in layouts)
        assert removed > 0
        assert len(a.prompt_token_ids) - len(b.prompt_token_ids) == removed  # shorter prefill, exactly


def _selected_like_transformers(model: Any, kwargs: dict[str, Any], got: list[torch.Tensor]) -> None:
    """What the plugin fed the LLM = the unpruned features at `select_in_layouts`' indices, per image."""
    unpruned = super(GPruneLlavaNextForConditionalGeneration, model).embed_multimodal(**kwargs)
    layouts = [image_layout(model.config, *map(int, s)) for s in kwargs["image_sizes"]]
    kept = select_in_layouts(list(unpruned), layouts, KEEP, method="gprune", **model.gprune.selector_params())
    assert len(got) == len(unpruned)
    for feats, idx, out, layout in zip(unpruned, kept, got, layouts, strict=True):
        assert out.shape[0] == kept_token_count(layout, KEEP)
        assert set(layout.always_keep.tolist()) <= set(idx.tolist())  # every newline is kept
        torch.testing.assert_close(out, feats[idx], rtol=0, atol=0)


def test_fed_tokens_are_the_kept_features(pruned: Any) -> None:
    model = engine_model(pruned)
    requests = [request([image(h, w, 20 + i)]) for i, (h, w) in enumerate(SIZES)]
    requests.append(request([image(*SIZES[1], 30), image(*SIZES[2], 31), image(*SIZES[3], 32)]))
    with EmbedRecorder(model) as rec:
        pruned.generate(requests, GREEDY, use_tqdm=False)
    assert sum(len(out) for _, out in rec.calls) == len(SIZES) + 3
    for kwargs, out in rec.calls:
        _selected_like_transformers(model, kwargs, out)


def test_concurrent_requests_each_get_their_own_selection(pruned: Any) -> None:
    """Different images batched into one encoder call: each gets what it gets when encoded alone."""
    model = engine_model(pruned)
    images = [image(*SIZES[i % len(SIZES)], 40 + i) for i in range(6)]
    with EmbedRecorder(model) as together:
        pruned.generate([request([im]) for im in images], GREEDY, use_tqdm=False)
    assert len(together.outputs()) == len(images)
    assert max(len(out) for _, out in together.calls) > 1  # vLLM did batch them
    for kwargs, out in together.calls:
        pixels, sizes = kwargs["pixel_values"], kwargs["image_sizes"]
        for i, batched in enumerate(out):
            alone = model.embed_multimodal(pixel_values=pixels[i : i + 1], image_sizes=sizes[i : i + 1])
            torch.testing.assert_close(batched, alone[0])


def test_keep_one_generates_what_plain_vllm_generates(plain: Any, checkpoint: Path) -> None:
    requests = [request([image(h, w, 50 + i)]) for i, (h, w) in enumerate(SIZES)]
    full = plain.generate(requests, GREEDY, use_tqdm=False)
    del plain
    identity = make_engine(checkpoint, {"keep": 1.0}, limit_mm_per_prompt={"image": 3})
    same = identity.generate(requests, GREEDY, use_tqdm=False)
    for a, b in zip(full, same, strict=True):
        assert a.prompt_token_ids == b.prompt_token_ids
        assert a.outputs[0].token_ids == b.outputs[0].token_ids


@pytest.mark.parametrize(
    ("setting", "message"),
    [({"keep": 1.5}, "keep as a ratio must be in (0, 1]"), ({"keep": 0.5, "positions": "original"}, "compact")],
)
def test_bad_config_fails_at_start_up(checkpoint: Path, setting: dict[str, Any], message: str) -> None:
    with pytest.raises(Exception, match=message.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")) as err:
        make_engine(checkpoint, setting)
    assert "gprune" in str(err.value)


def test_unsupported_architecture_fails_at_start_up(tmp_models: Path) -> None:
    from tiny_models import save_llava

    path = save_llava(tmp_models / "llava_1_5")
    with pytest.raises(Exception, match="gprune's vLLM plugin does not support LlavaForConditionalGeneration"):
        make_engine(path, {"keep": 0.5})
