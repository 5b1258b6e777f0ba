"""Padding-free packed inputs (several prompts in one row, positions restarting, no attention mask).

transformers reads such a call as separate sequences when it runs without a KV cache. gprune must keep
that meaning: at keep 1.0 the packed call is the unpruned one exactly; pruned, each packed prompt gets
what it gets pruned on its own.
"""

import pytest
import torch

import gprune
from gprune.pipeline import packed_segments, repack_segments, unpack_segments
from gprune.testing import tiny_llava_next
from gprune.testing.qwen import tiny_qwen
from test_hf_llava import encode
from test_hf_qwen import IMAGES, _inputs


def _pack(parts, positions, row_keys, image_keys):
    packed = {k: torch.cat([p[k] for p in parts], 1) for k in row_keys}
    packed |= {k: torch.cat([p[k] for p in parts], 0) for k in image_keys}
    packed["position_ids"] = torch.cat(positions, -1)
    return packed


def _llava_next():
    tiny = tiny_llava_next()
    parts = [dict(encode(tiny, [(60, 40)], ["What is this?"])), dict(encode(tiny, [(50, 70)], ["And this, now?"]))]
    positions = [torch.arange(p["input_ids"].shape[1]).unsqueeze(0) for p in parts]
    return tiny.model, parts, _pack(parts, positions, ["input_ids"], ["pixel_values", "image_sizes"])


def _qwen2_vl():
    tiny = tiny_qwen("qwen2_vl")
    model = tiny.model
    parts = [dict(_inputs(tiny, [("what is it?", 1)], IMAGES[:1])), dict(_inputs(tiny, [("compare", 2)], IMAGES[1:]))]
    positions = []
    for p in parts:
        rope_keys = ("mm_token_type_ids", "image_grid_thw", "attention_mask")
        mrope, _ = model.model.get_rope_index(p["input_ids"], **{k: p[k] for k in rope_keys})
        positions.append(torch.cat([torch.arange(p["input_ids"].shape[1]).view(1, 1, -1), mrope]))
    row_keys, image_keys = ["input_ids", "mm_token_type_ids"], ["pixel_values", "image_grid_thw"]
    return model, parts, _pack(parts, positions, row_keys, image_keys)


@pytest.fixture(scope="module", params=[_llava_next, _qwen2_vl], ids=["llava_next", "qwen2_vl"])
def packed_case(request):
    return request.param()


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs, use_cache=False).logits


def test_keep_all_is_the_unpruned_packed_call_exactly(packed_case):
    model, parts, packed = packed_case
    reference = _logits(model, packed)
    # The unpruned model really reads the row as separate sequences (else this test proves nothing).
    first = parts[0]["input_ids"].shape[1]
    torch.testing.assert_close(reference[:, first:], _logits(model, parts[1]), rtol=1e-4, atol=1e-5)
    with gprune.pruned(model, gprune.GPruneConfig(keep=1.0)):
        assert torch.equal(_logits(model, packed), reference)


@pytest.mark.parametrize("positions", ["original", "compact"])
def test_pruned_packed_prompts_equal_each_prompt_pruned_alone(packed_case, positions):
    model, parts, packed = packed_case
    with gprune.pruned(model, gprune.GPruneConfig(keep=0.5, positions=positions)):
        together = _logits(model, packed)
        assert gprune.last_report(model).tokens_after < gprune.last_report(model).tokens_before
        alone = [_logits(model, p) for p in parts]
    torch.testing.assert_close(together, torch.cat(alone, 1), rtol=1e-4, atol=1e-5)


def test_with_a_cache_the_row_is_one_sequence_as_for_the_model(packed_case):
    """With a KV cache transformers ignores packing; so does gprune (keep 1.0 equals the unpruned call)."""
    model, _, packed = packed_case
    with torch.no_grad():
        reference = model(**packed).logits
        with gprune.pruned(model, gprune.GPruneConfig(keep=1.0)):
            assert torch.equal(model(**packed).logits, reference)


def test_unpack_then_repack_is_the_identity():
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [1, 2, 3, 4, 5, 6]])
    positions = torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5]])
    segments = packed_segments({"input_ids": ids, "position_ids": positions})
    assert segments.tolist() == [[0, 0, 0, 1, 1, 2], [0, 0, 0, 0, 0, 0]]
    unpacked = unpack_segments(ids, positions, segments, {})
    assert unpacked.input_ids.tolist() == [[5, 6, 7, 0, 0, 0], [8, 9, 0, 0, 0, 0], [10] + [0] * 5, [1, 2, 3, 4, 5, 6]]
    assert unpacked.position_ids.tolist() == [[0, 1, 2, 0, 0, 0], [0, 1, 0, 0, 0, 0], [0] * 6, [0, 1, 2, 3, 4, 5]]
    assert unpacked.attention_mask.sum(1).tolist() == [3, 2, 1, 6]
    assert torch.equal(repack_segments(unpacked.input_ids.unsqueeze(-1), unpacked, segments).squeeze(-1), ids)
    # Not packed: a mask is given, or the positions step by one everywhere.
    masked = {"input_ids": ids, "position_ids": positions, "attention_mask": torch.ones_like(ids)}
    assert packed_segments(masked) is None
    assert packed_segments({"input_ids": ids, "position_ids": torch.arange(6).expand(2, 6)}) is None
