"""FLOPs / KV-cache accounting for videos: token counts, vision FLOPs and `gprune flops --video`.

Token counts are checked against what tiny real Qwen-VL models do with a hand-built video
(`qwen_video_inputs`), and against transformers' own video-processor arithmetic (its functions read from
source: the video-processor modules need torchvision to import). Vision FLOPs of a video grid are checked
against `torch.utils.flop_counter.FlopCounterMode` on tiny towers.
"""

from __future__ import annotations

import ast
import itertools
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

import gprune
from gprune.checkpoints import Checkpoint, load_checkpoint, video_tokens
from gprune.cli import main
from gprune.cli_flops import flops_report
from gprune.config import GPruneConfig
from gprune.errors import UserError
from gprune.flops import kv_cache_bytes, llm_prefill_flops, projector_flops, vision_flops
from gprune.layouts import kept_token_count
from gprune.testing.qwen import QWEN_MODEL_TYPES, VIDEO_PAD, tiny_qwen
from gprune.video import kept_video_tokens
from qwen_video_inputs import batch, sample

MODELS = Path(transformers.__file__).parent / "models"
# Sizes that the tiny tests' videos already satisfy, so no resize happens (video_inputs cannot resize).
NO_RESIZE = {"min_pixels": 1, "max_pixels": 10**9, "size": {"shortest_edge": 1, "longest_edge": 10**9}}


def _transformers_functions(module: str, *, cls: str | None = None) -> dict[str, Any]:
    """Module-level functions (and one class's methods) of a transformers source file, executed without
    its imports: the Qwen video processors import torchvision, which this environment must not have."""
    tree = ast.parse((MODELS / module).read_text())
    namespace: dict[str, Any] = {"math": math}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            exec(compile(ast.Module([node], []), module, "exec"), namespace)  # noqa: S102
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    item.decorator_list = []
                    exec(compile(ast.Module([item], []), module, "exec"), namespace)  # noqa: S102
    return namespace


# --- token counts ---------------------------------------------------------------------------------------


def _frames(patch: int, count: int, rows: int, cols: int) -> np.ndarray:
    rng = np.random.default_rng(count + rows)
    return (rng.random((count, rows * patch, cols * patch, 3)) * 255).astype("uint8")


@pytest.mark.parametrize("model_type", QWEN_MODEL_TYPES)
@pytest.mark.parametrize("count", [4, 5])
def test_video_tokens_equal_a_tiny_models_video_features(model_type, count):
    tiny = tiny_qwen(model_type)
    patch = tiny.model.config.vision_config.patch_size
    frames = _frames(patch, count, 4, 6)
    if count % 2:  # the processor pads the last temporal patch by repeating the last frame
        frames = np.concatenate([frames, frames[-1:]])
    inputs = batch(tiny, [sample(tiny, ["look", ("video", frames), "now"])])
    checkpoint = Checkpoint("tiny", tiny.model.config, NO_RESIZE)
    tokens = video_tokens(checkpoint, count, 4 * patch, 6 * patch)
    with torch.no_grad():
        features = tiny.model.model.get_video_features(
            inputs["pixel_values_videos"], inputs["video_grid_thw"], return_dict=True
        ).pooler_output
    assert [f.shape[0] for f in features] == [tokens.layout.length] == [math.ceil(count / 2) * 6]
    assert inputs["video_grid_thw"].tolist() == [list(tokens.grid_thw)]
    assert inputs["pixel_values_videos"].shape[0] == tokens.projector_tokens
    pads = int((inputs["input_ids"] == tiny.model.config.video_token_id).sum())
    assert pads == tokens.frames * tokens.tokens_per_frame == tokens.layout.length
    assert tokens.frames == math.ceil(count / 2) and tokens.input_frames == count
    assert VIDEO_PAD  # the prompt was built with the family's video placeholders


@pytest.mark.parametrize(("window", "keep"), [(1, 0.5), (2, 0.4), (0, 7)])
def test_kept_count_equals_what_pruning_keeps(window, keep):
    tiny = tiny_qwen("qwen2_5_vl")
    patch = tiny.model.config.vision_config.patch_size
    inputs = batch(tiny, [sample(tiny, ["watch", ("video", _frames(patch, 6, 4, 6)), "what moves?"])])
    tokens = video_tokens(Checkpoint("tiny", tiny.model.config, NO_RESIZE), 6, 4 * patch, 6 * patch, window=window)
    with gprune.pruned(tiny.model, GPruneConfig(keep=keep, video_window=window)), torch.no_grad():
        tiny.model.generate(**inputs, max_new_tokens=1, do_sample=False)
        report = gprune.last_report(tiny.model)
    (video,) = [r for r in report.images if r.kind == "video"]
    assert video.tokens_before == tokens.layout.length == 18
    assert video.tokens_after == kept_video_tokens(tokens.frames, tokens.tokens_per_frame, keep, window=window)
    assert video.tokens_after == kept_token_count(tokens.layout, keep)


def _qwen2_video_processor(pre: dict[str, int]) -> SimpleNamespace:
    fns = _transformers_functions("qwen2_vl/video_processing_qwen2_vl.py", cls="Qwen2VLVideoProcessor")
    size = {"shortest_edge": pre["min_pixels"], "longest_edge": pre["max_pixels"]}
    return SimpleNamespace(
        count=lambda f, h, w: fns["get_num_of_video_patches"](
            SimpleNamespace(size=size, patch_size=14, merge_size=2, temporal_patch_size=2), f, h, w, {}
        )
    )


SIZES = [(1, 448, 448), (16, 448, 448), (15, 480, 640), (7, 1080, 1920), (3, 50, 50), (9, 100, 2000), (33, 360, 241)]


@pytest.mark.parametrize(
    "pre", [{"min_pixels": 3136, "max_pixels": 12845056}, {"min_pixels": 100352, "max_pixels": 602112}]
)
def test_qwen25_counts_equal_transformers_video_processor(pre):
    checkpoint = load_checkpoint("Qwen2.5-VL-7B")
    checkpoint = Checkpoint(checkpoint.name, checkpoint.config, pre)
    processor = _qwen2_video_processor(pre)
    for frames, h, w in SIZES:
        tokens = video_tokens(checkpoint, frames, h, w)
        assert tokens.projector_tokens == processor.count(frames, h, w), (frames, h, w)
        assert tokens.layout.length == tokens.projector_tokens // 4
        assert tokens.frames == math.ceil(frames / 2)


def test_qwen3_counts_equal_transformers_video_processor():
    # Qwen3-VL resizes with a budget over all frames together, with or without the per-frame cap.
    config = AutoConfig.for_model("qwen3_vl")
    fns = _transformers_functions("qwen3_vl/video_processing_qwen3_vl.py", cls="Qwen3VLVideoProcessor")
    for size, cap in itertools.product(
        [
            {"shortest_edge": 128 * 32 * 32, "longest_edge": 32 * 32 * 768},
            {"shortest_edge": 4096, "longest_edge": 25165824},
        ],
        [False, True],
    ):
        processor = SimpleNamespace(
            size=size,
            patch_size=16,
            merge_size=2,
            temporal_patch_size=2,
            cap_pixels_per_frame=cap,
            max_video_tokens=768,
        )
        checkpoint = Checkpoint("qwen3", config, {}, video_preprocessor={"size": size, "cap_pixels_per_frame": cap})
        for frames, h, w in SIZES[1:]:  # one frame is refused by both (fewer than temporal_patch_size)
            want = fns["get_num_of_video_patches"](processor, frames, h, w, {})
            assert video_tokens(checkpoint, frames, h, w).projector_tokens == want, (size, cap, frames, h, w)
    with pytest.raises(UserError, match="at least 2 frames"):
        video_tokens(Checkpoint("qwen3", config), 1, 448, 448)


def test_qwen2_per_frame_cap_as_the_video_processor_resizes():
    # Qwen2VLVideoProcessor.resize with cap_pixels_per_frame: max_pixels = max(min(max_pixels,
    # int(max_video_tokens * 28 * 28 * 0.9) * 2 // frames), int(min_pixels * 1.05)); here 64 frames share
    # int(1000 * 784 * 0.9) * 2 // 64 = 22050 pixels each -> smart_resize(448, 448) = 140 x 140.
    checkpoint = load_checkpoint("Qwen2.5-VL-7B")
    pre = {**checkpoint.preprocessor, "cap_pixels_per_frame": True, "max_video_tokens": 1000}
    tokens = video_tokens(Checkpoint("capped", checkpoint.config, pre), 64, 448, 448)
    assert tokens.resized == (140, 140)
    assert tokens.layout.length == 32 * 25


def test_a_config_folder_reads_its_video_processor_file(tmp_path):
    bundled = load_checkpoint("Qwen2.5-VL-7B")
    (tmp_path / "config.json").write_text(json.dumps(bundled.config.to_dict()))
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(bundled.preprocessor))
    assert video_tokens(load_checkpoint(str(tmp_path)), 16, 896, 896).layout.length == 8 * 32 * 32
    (tmp_path / "video_preprocessor_config.json").write_text(
        json.dumps({"size": {"shortest_edge": 3136, "longest_edge": 200704}})
    )
    assert video_tokens(load_checkpoint(str(tmp_path)), 16, 896, 896).layout.length == 8 * 16 * 16


def test_video_tokens_refuse_other_families_and_bad_sizes():
    with pytest.raises(
        UserError,
        match="video token counts are defined for llava_onevision, qwen2_vl, qwen2_5_vl, qwen3_vl; "
        "got model_type 'llava_next'",
    ):
        video_tokens(load_checkpoint("llava-v1.6-vicuna-7b"), 8, 336, 336)
    qwen = load_checkpoint("Qwen2.5-VL-7B")
    for args in [(0, 448, 448), (4, 0, 448), (4, 448, -1), (2.5, 448, 448)]:
        with pytest.raises(UserError, match="must be a positive int"):
            video_tokens(qwen, *args)
    with pytest.raises(UserError, match="video_window"):
        video_tokens(qwen, 4, 448, 448, window=-1)


# --- vision FLOPs of a video grid -------------------------------------------------------------------------


def _counted(fn) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return int(counter.get_total_flops())


def test_qwen25_windowed_vit_on_a_video_grid_matches_torch_counter():
    # Windowed attention per temporal patch (112-px windows: 4x4 merged units, partial ones at the edges),
    # full attention per temporal patch in blocks 1 and 3; the grid comes from video_tokens.
    config = AutoConfig.for_model(
        "qwen2_5_vl",
        vision_config={"depth": 4, "hidden_size": 32, "intermediate_size": 48, "num_heads": 2,
                       "out_hidden_size": 64, "fullatt_block_indexes": [1, 3]},
        text_config={"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1},
    )  # fmt: skip
    tokens = video_tokens(Checkpoint("narrow", config, NO_RESIZE), 5, 168, 280)
    assert tokens.grid_thw == (3, 12, 20)
    vision = config.vision_config
    vision._attn_implementation = "eager"
    model = Qwen2_5_VisionTransformerPretrainedModel(vision).eval()
    t, h, w = tokens.grid_thw
    patches = t * h * w
    counted = _counted(lambda: model(torch.randn(patches, 3 * 2 * 14 * 14), grid_thw=torch.tensor([tokens.grid_thw])))
    vit_biases = 4 * patches * (4 * 32 + 2 * 48 + 32)  # torch's counter skips bias additions
    merger_biases = patches // 4 * (4 * 32 + 64)
    ours = vision_flops(config, grid_thw=tokens.grid_thw) + projector_flops(config, tokens.projector_tokens)
    assert ours - vit_biases - merger_biases == counted
    # attention is per temporal patch, not over the whole video: three frames cost three times one frame's
    per_frame = vision_flops(config, grid_thw=(1, h, w))
    embed = 2 * h * w * 3 * 2 * 14 * 14 * 32
    assert vision_flops(config, grid_thw=tokens.grid_thw) - 3 * embed == 3 * (per_frame - embed)


def test_qwen2_vit_on_a_video_grid_matches_torch_counter():
    config = AutoConfig.for_model(
        "qwen2_vl",
        vision_config={"depth": 2, "embed_dim": 32, "hidden_size": 64, "num_heads": 2, "mlp_ratio": 2},
        text_config={"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1},
    )
    tokens = video_tokens(Checkpoint("narrow", config, NO_RESIZE), 8, 112, 84)
    assert tokens.grid_thw == (4, 8, 6)
    vision = config.vision_config
    vision._attn_implementation = "eager"
    model = Qwen2VisionTransformerPretrainedModel(vision).eval()
    patches = tokens.projector_tokens
    counted = _counted(lambda: model(torch.randn(patches, 3 * 2 * 14 * 14), grid_thw=torch.tensor([tokens.grid_thw])))
    biases = 2 * patches * (4 * 32 + 64 + 32) + patches // 4 * (4 * 32 + 64)
    assert vision_flops(config, grid_thw=tokens.grid_thw) + projector_flops(config, patches) - biases == counted


# --- the report and the command ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "keep", "kept"), [(1, 0.33, 8 * 84), (0, 0.33, 675), (4, 0.33, 2 * 337), (1, 300, 300)]
)
def test_llm_and_kv_use_the_kept_video_tokens(window, keep, kept):
    # 16 frames of 448x448 -> 8 temporal patches x 256 tokens; a ratio keeps int(0.33 n) of each graph
    # (8 graphs of 256, one of 2048, two of 1024), a budget of 300 is split over the 8 graphs (and met exactly)
    report = flops_report("Qwen2.5-VL-7B", None, 64, [keep], video=(16, 448, 448), video_window=window)
    config = load_checkpoint("Qwen2.5-VL-7B").config
    unpruned, pruned = report["rows"]
    assert pruned["visual_tokens"] == kept == kept_video_tokens(8, 256, keep, window=window)
    assert unpruned["visual_tokens"] == 2048
    assert pruned["llm_prefill_flops"] == llm_prefill_flops(config, kept + 64)
    assert pruned["kv_cache_bytes"] == kv_cache_bytes(config, kept + 64, torch.float16)
    assert unpruned["llm_prefill_flops"] == llm_prefill_flops(config, 2048 + 64)
    assert report["vision_flops"] == vision_flops(config, grid_thw=(8, 32, 32))
    assert report["projector_flops"] == projector_flops(config, 8 * 32 * 32)
    total = report["vision_flops"] + report["projector_flops"] + pruned["llm_prefill_flops"]
    assert pruned["total_flops"] == total


def _run_json(capsys, *argv: str) -> dict:
    assert main(["flops", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_video_json(capsys):
    report = _run_json(capsys, "Qwen2.5-VL-7B", "--video", "16x448x448", "--keep", "0.5")
    assert report["video"] == {
        "frames": 16,
        "height": 448,
        "width": 448,
        "resized": [448, 448],
        "grid_thw": [8, 32, 32],
        "llm_frames": 8,
        "tokens_per_frame": 256,
        "window": 1,
        "graphs": 8,
        "always_kept_tail": 0,
    }
    assert "image_size" not in report
    unpruned, pruned = report["rows"]
    assert (unpruned["visual_tokens"], pruned["visual_tokens"]) == (2048, 1024)
    config = load_checkpoint("Qwen2.5-VL-7B").config
    assert pruned["llm_prefill_flops"] == llm_prefill_flops(config, 1024 + 64)
    assert 0 < pruned["total_reduction"] < pruned["llm_reduction"]
    whole = _run_json(capsys, "Qwen2.5-VL-7B", "--video", "16x448x448", "--keep", "0.33", "--video-window", "0")
    assert (whole["video"]["window"], whole["video"]["graphs"]) == (0, 1)
    assert whole["rows"][1]["visual_tokens"] == 675
    assert whole["vision_flops"] == report["vision_flops"]  # the encoder runs every frame either way


def test_cli_video_table(capsys):
    assert main(["flops", "Qwen2.5-VL-7B", "--video", "16x448x448", "--keep", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "16-frame 448x448 video" in out and "grid 8x32x32" in out
    assert "2048" in out and "1024" in out


def test_image_mode_is_unchanged_by_the_video_options():
    image = flops_report("Qwen2.5-VL-7B", (672, 672), 64, [0.5])
    assert image["image_size"] == [672, 672] and "video" not in image
    assert [r["visual_tokens"] for r in image["rows"]] == [576, 288]
    assert flops_report("Qwen2.5-VL-7B", None, 64, [0.5])["rows"] == image["rows"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["Qwen2.5-VL-7B", "--video", "0x448x448"], "at least one frame"),
        (["Qwen2.5-VL-7B", "--video", "16x448"], "FRAMESxHxW"),
        (["Qwen2.5-VL-7B", "--video", "16xax448"], "FRAMESxHxW"),
        (["Qwen2.5-VL-7B", "--video", "16x0x448"], "positive pixels"),
        (
            ["llava-v1.6-vicuna-7b", "--video", "8x336x336"],
            "video token counts are defined for llava_onevision, qwen2_vl",
        ),
        (["Qwen2.5-VL-7B", "--video", "8x448x448", "--image-size", "448"], "not both"),
        (["Qwen2.5-VL-7B", "--video", "8x448x448", "--video-window", "-1"], "video_window"),
        (["Qwen2.5-VL-7B", "--video-window", "2"], "give --video"),
    ],
)
def test_cli_bad_video_input(capsys, argv, message):
    assert main(["flops", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_qwen3_vit_and_deepstack_mergers_on_a_video_grid_match_torch_counter():
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionModel

    config = AutoConfig.for_model(
        "qwen3_vl",
        vision_config={"depth": 3, "hidden_size": 32, "intermediate_size": 48, "num_heads": 2, "out_hidden_size": 64,
                       "num_position_embeddings": 16, "deepstack_visual_indexes": [0, 2]},
        text_config={"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1},
    )  # fmt: skip
    tokens = video_tokens(Checkpoint("narrow", config, {}, video_preprocessor=NO_RESIZE), 6, 128, 192)
    assert tokens.grid_thw == (3, 8, 12)
    vision = config.vision_config
    vision._attn_implementation = "eager"
    model = Qwen3VLVisionModel(vision).eval()
    patches = tokens.projector_tokens
    counted = _counted(lambda: model(torch.randn(patches, 3 * 2 * 16 * 16), grid_thw=torch.tensor([tokens.grid_thw])))
    embed_bias = patches * 32
    vit_biases = 3 * patches * (4 * 32 + 48 + 32)
    merger_biases = 3 * (patches // 4) * (4 * 32 + 64)  # the merger and two DeepStack mergers
    ours = vision_flops(config, grid_thw=tokens.grid_thw) + projector_flops(config, patches)
    assert ours - embed_bias - vit_biases - merger_biases == counted


def test_cli_reads_a_qwen3_vl_config(tmp_path, capsys):
    folder = tmp_path / "qwen3"
    folder.mkdir()
    (folder / "config.json").write_text(AutoConfig.for_model("qwen3_vl").to_json_string())
    (folder / "video_preprocessor_config.json").write_text(
        json.dumps({"size": {"shortest_edge": 4096, "longest_edge": 25165824}})
    )
    report = _run_json(capsys, "--config", str(folder), "--video", "16x448x448", "--keep", "0.25")
    # 16 x 448 x 448 fits the whole-video budget: 448 / 16 = 28 patches a side, 14 x 14 tokens per frame
    assert report["video"]["grid_thw"] == [8, 28, 28] and report["video"]["tokens_per_frame"] == 196
    assert [r["visual_tokens"] for r in report["rows"]] == [8 * 196, 8 * 49]
    assert report["vision_flops"] > 0 and report["projector_flops"] > 0


def test_onevision_video_tokens_equal_the_tiny_models_features_and_the_newline_is_kept(tmp_path, capsys):
    from gprune.testing import tiny_llava_onevision

    tiny = tiny_llava_onevision()
    config = tiny.model.config
    side = config.vision_config.image_size
    tokens = video_tokens(Checkpoint("tiny", config), 3, 40, 48)
    videos = torch.randn(1, 3, 3, side, side)  # one video of 3 frames, already at the tower's input size
    with torch.no_grad():
        features = tiny.model.model.get_video_features(videos).pooler_output
    assert tuple(features.shape[:2]) == (1, tokens.layout.length) == (1, 3 * tokens.tokens_per_frame + 1)
    assert tokens.encoder_images == 3 and tokens.always_kept_tail == 1
    # the CLI on a full-size OneVision config: 8 frames of 27x27 SigLIP patches pooled to 14x14 = 196 each
    (tmp_path / "config.json").write_text(AutoConfig.for_model("llava_onevision").to_json_string())
    report = _run_json(
        capsys, "--config", str(tmp_path), "--video", "8x480x640", "--keep", "0.5", "--video-window", "2"
    )
    assert report["video"]["tokens_per_frame"] == 196 and report["video"]["always_kept_tail"] == 1
    assert [r["visual_tokens"] for r in report["rows"]] == [8 * 196 + 1, 4 * int(0.5 * 392) + 1]
    config = load_checkpoint(str(tmp_path)).config
    assert report["vision_flops"] == vision_flops(config, num_images=8)
    assert report["projector_flops"] == projector_flops(config, 8 * 729)
