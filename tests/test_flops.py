"""Analytic FLOPs against torch's own counter on full-size models built on the meta device (no compute)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    Qwen2Config,
    Qwen3Config,
    SiglipVisionConfig,
    SiglipVisionModel,
)
from transformers.models.llava_next.modeling_llava_next import LlavaNextMultiModalProjector
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
    Qwen2_5_VisionTransformerPretrainedModel,
    Qwen2_5_VLPatchMerger,
)
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

import gprune
from gprune.checkpoints import load_checkpoint
from gprune.flops import kv_cache_bytes, llm_prefill_flops, llm_prefill_parts, projector_flops, vision_flops
from gprune.integrations.hf_args import output_cache

SEQ = 48


def _counted(fn) -> tuple[int, dict[str, int]]:
    with FlopCounterMode(display=False) as counter:
        fn()
    per_op = {str(op): int(v) for op, v in counter.get_flop_counts()["Global"].items()}
    return int(counter.get_total_flops()), per_op


def _text_configs() -> dict[str, object]:
    qwen25 = load_checkpoint("Qwen2.5-VL-7B").config.get_text_config()
    return {
        "vicuna-7b (llava-v1.6)": load_checkpoint("llava-v1.6-vicuna-7b").config.get_text_config(),
        "mistral-7b (llava-v1.6)": load_checkpoint("llava-v1.6-mistral-7b").config.get_text_config(),
        "llama3-8b (llama3-llava-next)": load_checkpoint("llama3-llava-next-8b").config.get_text_config(),
        # The Qwen2.5-VL decoder is a Qwen2 decoder with mRoPE; Qwen2ForCausalLM has the same matmuls.
        "qwen2 as in Qwen2.5-VL-7B": Qwen2Config(
            hidden_size=qwen25.hidden_size,
            intermediate_size=qwen25.intermediate_size,
            num_hidden_layers=qwen25.num_hidden_layers,
            num_attention_heads=qwen25.num_attention_heads,
            num_key_value_heads=qwen25.num_key_value_heads,
            vocab_size=qwen25.vocab_size,
        ),
        "qwen3-8b": Qwen3Config(
            hidden_size=4096,
            intermediate_size=12288,
            num_hidden_layers=36,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=128,
            vocab_size=151936,
        ),
    }


def _meta_prefill(config, n: int) -> tuple[int, dict[str, int], torch.nn.Module]:
    config._attn_implementation = "eager"
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
        ids = torch.zeros(1, n, dtype=torch.long)
        mask = torch.ones(1, n, dtype=torch.long)
    total, per_op = _counted(lambda: model(input_ids=ids, attention_mask=mask, logits_to_keep=1))
    return total, per_op, model


def _bias_adds(model: torch.nn.Module, n: int) -> int:
    """Bias elements added per forward: every biased Linear in the decoder runs on n tokens."""
    return sum(
        m.bias.numel() * n
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and m.bias is not None and "lm_head" not in name
    )


@pytest.mark.parametrize("name", list(_text_configs()))
def test_llm_prefill_matches_torch_flop_counter(name):
    config = _text_configs()[name]
    counted, per_op, model = _meta_prefill(config, SEQ)
    ours = llm_prefill_flops(config, SEQ, attention="full")
    assert abs(ours - counted) / counted < 0.005, (ours, counted)
    # The attention products are bmm's in eager attention: they must agree exactly.
    assert llm_prefill_parts(config, SEQ).attention == per_op["aten.bmm"]
    # torch counts no bias additions; we count one FLOP per bias element.
    assert llm_prefill_parts(config, SEQ).bias == _bias_adds(model, SEQ)


def test_qwen2_counts_qkv_biases_and_llama_none():
    qwen = _text_configs()["qwen2 as in Qwen2.5-VL-7B"]
    llama = _text_configs()["vicuna-7b (llava-v1.6)"]
    assert llm_prefill_parts(qwen, 10).bias == 28 * 10 * (3584 + 2 * 512)
    assert llm_prefill_parts(llama, 10).bias == 0


def test_vocabulary_projection_counts_one_position():
    config = _text_configs()["llama3-8b (llama3-llava-next)"]
    parts = [llm_prefill_parts(config, n) for n in (10, 20)]
    assert parts[0].lm_head == parts[1].lm_head == 2 * 4096 * 128320


def test_causal_attention_counts_the_lower_triangle():
    config = _text_configs()["mistral-7b (llava-v1.6)"]
    n = 37
    full = llm_prefill_parts(config, n, attention="full")
    causal = llm_prefill_parts(config, n, attention="causal")
    keys_seen = sum(i + 1 for i in range(n))  # query i attends to keys 0..i
    per_pair = 2 * 2 * 32 * 128 * 32  # two products, heads x head_dim, layers
    assert causal.attention == per_pair * keys_seen
    assert full.attention == per_pair * n * n
    assert causal.total - full.total == causal.attention - full.attention


def test_llava_text_config_can_be_passed_as_the_whole_model_config():
    checkpoint = load_checkpoint("llava-v1.6-vicuna-7b")
    assert gprune.llm_prefill_flops(checkpoint.config, 100) == llm_prefill_flops(checkpoint.config.text_config, 100)


def test_clip_tower_matches_torch_counter():
    vision = load_checkpoint("llava-v1.6-vicuna-7b").config.vision_config
    config = CLIPVisionConfig(**vision.to_dict())
    config._attn_implementation = "eager"
    with torch.device("meta"):
        model = CLIPVisionModel(config)
        pixels = torch.zeros(2, 3, 336, 336)
    counted, _ = _counted(lambda: model(pixel_values=pixels, output_hidden_states=True))
    ours = vision_flops(vision, num_images=2)
    assert abs(ours - counted) / counted < 0.005, (ours, counted)


def test_siglip_tower_matches_torch_counter():
    config = SiglipVisionConfig(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=27,
        num_attention_heads=16,
        image_size=384,
        patch_size=14,
    )  # siglip-so400m-patch14-384
    config._attn_implementation = "eager"
    with torch.device("meta"):
        model = SiglipVisionModel(config)
        pixels = torch.zeros(1, 3, 384, 384)
    counted, _ = _counted(lambda: model(pixel_values=pixels))
    ours = vision_flops(config, num_images=1)
    assert abs(ours - counted) / counted < 0.005, (ours, counted)


def test_qwen25_vl_windowed_vit_matches_torch_counter():
    # Real tensors (the ViT reads its grid with .tolist()), so a narrow tower; the window layout is
    # the full-size one: 112-pixel windows, full attention in blocks 1 and 3, a grid that leaves
    # partial windows at the right edge.
    config = AutoConfig.for_model(
        "qwen2_5_vl",
        vision_config={
            "depth": 4,
            "hidden_size": 32,
            "intermediate_size": 48,
            "num_heads": 2,
            "out_hidden_size": 64,
            "fullatt_block_indexes": [1, 3],
        },
        text_config={"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1},
    )
    vision = config.vision_config
    vision._attn_implementation = "eager"
    grid = (1, 16, 20)
    model = Qwen2_5_VisionTransformerPretrainedModel(vision).eval()
    pixels = torch.randn(grid[1] * grid[2], 3 * 2 * 14 * 14)
    with torch.no_grad():
        counted, _ = _counted(lambda: model(pixels, grid_thw=torch.tensor([grid])))
    merger = projector_flops(config, grid[1] * grid[2])
    merger_biases = grid[1] * grid[2] // 4 * (4 * 32 + 64)  # torch's counter skips bias additions
    ours = vision_flops(config, grid_thw=grid) + merger - merger_biases
    vit_biases = 4 * grid[1] * grid[2] * (4 * 32 + 2 * 48 + 32)
    assert ours - vit_biases == counted


def test_qwen2_vl_vit_matches_torch_counter():
    # Full attention per frame, GELU MLP (embed_dim x mlp_ratio); a narrow tower, two frames.
    config = AutoConfig.for_model(
        "qwen2_vl",
        vision_config={"depth": 2, "embed_dim": 32, "hidden_size": 64, "num_heads": 2, "mlp_ratio": 2},
        text_config={"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1},
    )
    vision = config.vision_config
    vision._attn_implementation = "eager"
    grid = (2, 6, 8)
    patches = grid[0] * grid[1] * grid[2]
    model = Qwen2VisionTransformerPretrainedModel(vision).eval()
    with torch.no_grad():
        counted, _ = _counted(lambda: model(torch.randn(patches, 3 * 2 * 14 * 14), grid_thw=torch.tensor([grid])))
    vit_biases = 2 * patches * (4 * 32 + 64 + 32)  # qkv + proj, fc1 + fc2, per layer
    merger_biases = patches // 4 * (4 * 32 + 64)
    ours = vision_flops(config, grid_thw=grid) + projector_flops(config, patches)
    assert ours - vit_biases - merger_biases == counted


def test_projectors_match_torch_counter():
    config = load_checkpoint("llava-v1.6-vicuna-7b").config
    with torch.device("meta"):
        projector = LlavaNextMultiModalProjector(config)
        x = torch.zeros(5, 576, 1024)
    counted, _ = _counted(lambda: projector(x))
    biases = 5 * 576 * 2 * 4096
    assert projector_flops(config, 5 * 576) - biases == counted

    qwen = load_checkpoint("Qwen2.5-VL-7B").config
    with torch.device("meta"):
        merger = Qwen2_5_VLPatchMerger(dim=3584, context_dim=1280, spatial_merge_size=2)
        x = torch.zeros(2304, 1280)
    counted, _ = _counted(lambda: merger(x))
    assert projector_flops(qwen, 2304) - 576 * (5120 + 3584) == counted


def test_kv_cache_bytes_match_a_real_cache():
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=50,
    )
    model = AutoModelForCausalLM.from_config(config).eval()
    n = 13
    with torch.no_grad():
        cache = output_cache(model(input_ids=torch.zeros(1, n, dtype=torch.long), use_cache=True))
    stored = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
    assert kv_cache_bytes(config, n, torch.float32) == stored
    assert kv_cache_bytes(config, n, torch.bfloat16) == stored // 2
    assert kv_cache_bytes(config, n, torch.float16, batch_size=3) == 3 * stored // 2


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: llm_prefill_flops(c, -1), "non-negative"),
        (lambda c: llm_prefill_flops(c, 10, attention="sparse"), "attention must be one of"),
        (lambda c: llm_prefill_flops(c.vision_config, 10), "model_type 'clip_vision_model'"),
        (lambda c: kv_cache_bytes(c, 10, "float16"), "torch.dtype"),
        (lambda c: vision_flops(c.text_config), "vision FLOPs are defined"),
        (lambda c: projector_flops(c.text_config, 10), "projector FLOPs are defined"),
    ],
)
def test_bad_input_names_the_problem(call, message):
    config = load_checkpoint("llava-1.5-7b").config
    with pytest.raises((ValueError, TypeError), match=message):
        call(config)


def test_qwen_vision_needs_the_grid():
    with pytest.raises(ValueError, match="patch grid"):
        vision_flops(load_checkpoint("Qwen2.5-VL-7B").config)
