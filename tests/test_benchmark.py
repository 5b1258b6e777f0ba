"""The latency benchmark's bookkeeping on a tiny model (no timing is asserted: benchmarks print numbers)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig

from gprune.benchmark import (
    MachineLoad,
    check_targets,
    format_end_to_end,
    format_markdown,
    run_benchmark,
    run_end_to_end,
)
from gprune.checkpoints import image_tokens, load_checkpoint
from gprune.cli import main
from gprune.flops import kv_cache_bytes, llm_prefill_flops
from gprune.layouts import kept_token_count

TINY = LlamaConfig(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    vocab_size=64,
    max_position_embeddings=4096,
)


@pytest.fixture(scope="module")
def result():
    return run_benchmark(
        llm=TINY,
        image_size=(336, 336),
        prompt_tokens=10,
        keeps=(1.0, 0.33, 100),
        repeats=2,
        warmup=1,
        decode_tokens=2,
        quiet_gate=False,
        log=lambda _: None,
    )


def test_rows_follow_the_layout_and_the_flops_model(result):
    layout = image_tokens(load_checkpoint("llava-v1.6-vicuna-7b"), 336, 336).layout
    unpruned, keep1, keep33, keep100 = result["rows"]
    assert unpruned["visual_tokens"] == keep1["visual_tokens"] == layout.length
    assert keep33["visual_tokens"] == kept_token_count(layout, 0.33)
    assert keep100["visual_tokens"] == 100
    for row in result["rows"]:
        assert row["sequence_tokens"] == row["visual_tokens"] + 10
        # what the model really cached equals the analytic size
        assert (
            row["kv_cache_bytes"]
            == row["kv_cache_bytes_analytic"]
            == kv_cache_bytes(TINY, row["sequence_tokens"], torch.float32)
        )
        assert row["prefill_s"]["n"] == 2
        assert row["predicted_speedup_full"] == pytest.approx(
            llm_prefill_flops(TINY, unpruned["sequence_tokens"]) / llm_prefill_flops(TINY, row["sequence_tokens"])
        )
        assert row["peak_memory_bytes"] > 0
    assert unpruned["selector_s"] is None and keep33["selector_s"]["n"] == 2
    assert keep33["predicted_speedup_full"] > keep33["predicted_speedup_causal"] > 1


def test_report_states_targets_as_met_or_missed(result):
    table = format_markdown(result)
    assert table.count("\n") == 1 + len(result["rows"])
    lines = check_targets(result, keep=0.33)
    assert len(lines) == 2 and all(("met" in line) or ("MISSED" in line) for line in lines)
    assert check_targets(result, keep=0.5) == ["keep 0.5 was not measured"]


def test_bench_cli_rejects_bad_input(capsys):
    assert main(["bench", "--llm", "nope"]) == 2
    assert "--llm must be" in capsys.readouterr().err
    assert main(["bench", "--repeats", "0"]) == 2
    capsys.readouterr()
    for argv, message in [
        (["--video", "8x448"], "FRAMESxHxW"),
        (["--video-window", "0"], "--video-window groups the frames of a --video"),
        (["--video", "8x224x224", "--mode", "both"], "--mode llm only"),
        (["--video", "8x224x224", "--video-window", "-1"], "video_window must be an int >= 0"),
    ]:
        assert main(["bench", "--no-memory", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)


def test_video_rows_count_what_pruning_keeps_per_window():
    """A 6-frame 112x112 video as Qwen2.5-VL-7B tokenises it: 3 frames of 16 tokens, scored per window."""
    from gprune.video import kept_video_tokens

    for window, kept in [(1, 3 * int(0.3 * 16)), (0, int(0.3 * 48))]:
        result = run_benchmark(
            llm=TINY, video=(6, 112, 112), video_window=window, prompt_tokens=4, keeps=(0.3,), repeats=1,
            warmup=0, decode_tokens=0, measure_memory=False, quiet_gate=False, log=lambda _: None,
        )  # fmt: skip
        assert result["image_size"] is None and result["video"]["llm_frames"] == 3
        assert result["video"]["tokens_per_frame"] == 16 and result["video"]["graphs"] == (3 if window else 1)
        unpruned, pruned = result["rows"]
        assert unpruned["visual_tokens"] == 48
        assert pruned["visual_tokens"] == kept == kept_video_tokens(3, 16, 0.3, window=window)


def test_end_to_end_runs_generate_through_gprune_pruned():
    result = run_end_to_end(
        llm=TINY,
        image_size=(336, 336),
        prompt_tokens=20,
        keeps=(0.33,),
        repeats=1,
        warmup=0,
        quiet_gate=False,
        log=lambda _: None,
    )
    layout = image_tokens(load_checkpoint("llava-v1.6-vicuna-7b"), 336, 336).layout
    unpruned, pruned = result["rows"]
    assert unpruned["visual_tokens"] == result["visual_tokens"] == layout.length
    assert pruned["visual_tokens"] == kept_token_count(layout, 0.33)
    assert unpruned["selector_s"] is None and pruned["selector_s"] > 0
    assert pruned["predicted_speedup_full"] > 1
    assert format_end_to_end(result).count("\n") == 3


def test_machine_load_reads_proc_and_never_reports_negative_use():
    load = MachineLoad(max_wait=0.0)
    mark = load.snapshot()
    sum(i * i for i in range(200_000))  # this process's own work is not counted as others'
    assert load.others_since(mark) >= 0.0
    load.wait_quiet(window=0.01)  # max_wait 0: returns at once
    assert load.waited < 1.0


def test_bench_prints_no_targets_and_puts_them_in_the_json(result, tmp_path, capsys, monkeypatch):
    import json

    import gprune.benchmark as benchmark

    monkeypatch.setattr(benchmark, "run_benchmark", lambda **kwargs: dict(result))
    path = tmp_path / "bench.json"
    assert main(["bench", "--keep", "1.0", "0.33", "100", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "MISSED" not in out and " met" not in out and "| keep |" in out
    saved = json.loads(path.read_text())["llm"]
    assert saved["project_targets"] == check_targets(result) and len(saved["project_targets"]) == 2


def test_bench_progress_says_how_long_is_left():
    from gprune.benchmark import Progress

    progress = Progress(warmup=1, repeats=4, part=(1, 2), name="llm")
    line = progress.line(-1)
    assert line.startswith("  part 1/2 (llm): warm-up done after ") and " left; later parts not included" in line
    assert "repeat 4/4 done" in progress.line(3) and "about 0s left" in progress.line(3)


def test_peak_memory_pass_prints_no_profiler_lines(capfd):
    from gprune.benchmark import _peak_memory

    assert _peak_memory(lambda: torch.randn(64, 64) @ torch.randn(64, 64), torch.device("cpu")) > 0
    captured = capfd.readouterr()
    assert "profiler" not in captured.err and "profiler" not in captured.out


def test_bench_refuses_cuda_on_a_cpu_torch_in_one_line(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["bench", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sees no CUDA device; use --device cpu" in err
