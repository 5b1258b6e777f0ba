"""`gprune flops` and the visual-token counts it rests on."""

from __future__ import annotations

import json
import sys
from importlib import resources

import pytest
import torch
from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape, unpad_image

from gprune.checkpoints import bundled_checkpoints, image_tokens, load_checkpoint
from gprune.cli import main
from gprune.flops import kv_cache_bytes, llm_prefill_flops

LLAVA_NEXT = ("llava-v1.6-vicuna-7b", "llava-v1.6-mistral-7b", "llama3-llava-next-8b")


def _run_json(capsys, *argv: str) -> dict:
    assert main(["flops", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_every_bundled_checkpoint_loads_with_its_published_sizes():
    expected = {  # (model_type, text hidden, layers, kv heads, vocab)
        "llava-1.5-7b": ("llava", 4096, 32, 32, 32064),
        "llava-v1.6-vicuna-7b": ("llava_next", 4096, 32, 32, 32064),
        "llava-v1.6-mistral-7b": ("llava_next", 4096, 32, 8, 32064),
        "llama3-llava-next-8b": ("llava_next", 4096, 32, 8, 128320),
        "Qwen2.5-VL-7B": ("qwen2_5_vl", 3584, 28, 4, 152064),
    }
    assert bundled_checkpoints() == sorted(expected)
    for name, (model_type, hidden, layers, kv, vocab) in expected.items():
        config = load_checkpoint(name).config
        text = config.get_text_config()
        assert (config.model_type, text.hidden_size, text.num_hidden_layers, text.num_key_value_heads) == (
            model_type,
            hidden,
            layers,
            kv,
        )
        assert text.vocab_size == vocab


@pytest.mark.parametrize("size", [(672, 672), (480, 640), (640, 480), (300, 1000), (1000, 299), (337, 500), (50, 50)])
@pytest.mark.parametrize("name", LLAVA_NEXT)
def test_llava_next_token_count_matches_transformers_unpadding(name, size):
    # Independent formulation: transformers' own grid-shape and unpad functions on a feature map.
    config = load_checkpoint(name).config
    rows, cols = get_anyres_image_grid_shape(list(size), config.image_grid_pinpoints, 336)
    feature_map = torch.empty(1, rows * 24, cols * 24)
    unpadded = unpad_image(feature_map, list(size))
    expected = 576 + unpadded.shape[1] * (unpadded.shape[2] + 1)
    assert image_tokens(load_checkpoint(name), *size).layout.length == expected


def test_qwen_and_llava15_token_counts():
    assert image_tokens(load_checkpoint("llava-1.5-7b"), 1000, 200).layout.length == 576
    qwen = load_checkpoint("Qwen2.5-VL-7B")
    assert image_tokens(qwen, 672, 672).layout.length == (672 // 28) ** 2
    assert image_tokens(qwen, 700, 700).grid_thw == (1, 50, 50)  # 700 rounds to 700 = 25 * 28


def test_qwen2_vl_config_file(tmp_path, capsys):
    qwen25 = json.loads((resources.files("gprune") / "configs" / "Qwen2.5-VL-7B.json").read_text())["config"]
    config = {  # Qwen2-VL-7B-Instruct: the same decoder, a full-attention ViT with a GELU MLP
        "model_type": "qwen2_vl",
        "text_config": {**qwen25["text_config"], "model_type": "qwen2_vl_text"},
        "vision_config": {"depth": 32, "embed_dim": 1280, "hidden_size": 3584, "mlp_ratio": 4, "num_heads": 16},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    report = _run_json(capsys, "--config", str(path), "--image-size", "672x672", "--keep", "100")
    assert [r["visual_tokens"] for r in report["rows"]] == [576, 100]
    assert report["vision_flops"] > 0 and report["projector_flops"] > 0


def test_cli_json_matches_the_library(capsys):
    report = _run_json(
        capsys, "llava-v1.6-vicuna-7b", "--image-size", "672x672", "--prompt-tokens", "64", "--keep", "0.33"
    )
    config = load_checkpoint("llava-v1.6-vicuna-7b").config
    unpruned, pruned = report["rows"]
    assert unpruned["visual_tokens"] == 576 + 48 * 49
    # int(0.33 * 576) base + int(0.33 * 2304) grid + all 48 newlines
    assert pruned["visual_tokens"] == 190 + 760 + 48
    assert pruned["sequence_tokens"] == pruned["visual_tokens"] + 64
    assert unpruned["llm_prefill_flops"] == llm_prefill_flops(config, 2928 + 64)
    assert pruned["llm_prefill_flops"] == llm_prefill_flops(config, 998 + 64)
    assert pruned["llm_reduction"] == pytest.approx(1 - pruned["llm_prefill_flops"] / unpruned["llm_prefill_flops"])
    assert pruned["kv_cache_bytes"] == kv_cache_bytes(config, 998 + 64, torch.float16)
    assert report["vision_flops"] > 0 and report["projector_flops"] > 0
    # Pruning after the projector leaves vision + projector untouched: the total saves less than the LLM.
    assert 0 < pruned["total_reduction"] < pruned["llm_reduction"]


def test_cli_keep_tokens_and_causal(capsys):
    report = _run_json(capsys, "Qwen2.5-VL-7B", "--keep", "100", "--attention", "causal", "--kv-dtype", "float32")
    config = load_checkpoint("Qwen2.5-VL-7B").config
    pruned = report["rows"][1]
    assert pruned["visual_tokens"] == 100
    assert pruned["llm_prefill_flops"] == llm_prefill_flops(config, 164, attention="causal")
    assert pruned["kv_cache_bytes"] == kv_cache_bytes(config, 164, torch.float32)


def test_cli_reads_a_config_file(tmp_path, capsys):
    bundled = json.loads((resources.files("gprune") / "configs" / "llava-1.5-7b.json").read_text())["config"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(bundled))
    report = _run_json(capsys, "--config", str(path), "--keep", "0.5")
    assert [r["visual_tokens"] for r in report["rows"]] == [576, 288]


def test_cli_table(capsys):
    assert main(["flops", "llava-v1.6-mistral-7b", "--keep", "0.5", "0.11"]) == 0
    out = capsys.readouterr().out
    assert "unpruned" in out and "0.11" in out and "2928" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["no-such-model"], "neither a bundled checkpoint"),
        (["llava-1.5-7b", "--keep", "1.5"], "keep"),
        (["llava-1.5-7b", "--prompt-tokens", "-3"], "prompt tokens"),
        ([], "exactly one"),
    ],
)
def test_cli_bad_input(capsys, argv, message):
    assert main(["flops", *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_rejects_bad_image_size(capsys):
    with pytest.raises(SystemExit):
        main(["flops", "llava-1.5-7b", "--image-size", "10xfoo"])
    assert "image size" in capsys.readouterr().err


def test_cli_plain_table_without_rich(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "rich.console", None)  # makes `import rich.console` fail
    assert main(["flops", "llava-1.5-7b", "--keep", "0.5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[3].split() == ["keep", "visual", "sequence", "LLM", "TFLOPs", "LLM", "-%", "total", "-%", "KV", "MiB"]
    assert lines[4].split()[:3] == ["unpruned", "576", "640"]
    assert lines[5].split()[:3] == ["0.5", "288", "352"]
