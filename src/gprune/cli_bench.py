"""`gprune bench`: prefill / decode latency, memory and selector time, unpruned vs pruned (see gprune.benchmark).

The arguments live here, without torch, so ``gprune --help`` stays fast; `gprune.benchmark` (imported
when the command runs) measures.
"""

from __future__ import annotations

import argparse

from gprune.cli_options import (
    DTYPES,
    add_json_argument,
    add_keep_argument,
    add_seed_argument,
    add_video_window_argument,
)

MID_SIZE = "mid"  # gprune.benchmark.MID_SIZE
DEFAULT_KEEPS = (1.0, 0.5, 0.33, 0.22, 0.11)  # gprune.benchmark.DEFAULT_KEEPS (a test checks both)


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure LLM prefill (time to first token), decode tokens/s, memory and selector time per keep setting",
        description=(
            "Times a random-weight LLM on sequences of each pruned length (LLaVA-NeXT token layout) and the "
            "G-Prune selector on the same features; prints measured vs FLOPs-predicted speed-ups. Progress and "
            "the time left go to stderr."
        ),
    )
    add_bench_arguments(p)
    p.set_defaults(handler=run_bench)


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `gprune bench` and `benchmarks/latency.py`."""
    p.add_argument("--llm", default=MID_SIZE, help=f"{MID_SIZE!r} (8x1024 LLaMA) or a bundled checkpoint's text model")
    p.add_argument("--image-size", default="672x672", help="HxW pixels, tokenised as LLaVA-NeXT (default 672x672)")
    p.add_argument("--prompt-tokens", type=int, default=64, help="text tokens around the image (default 64)")
    p.add_argument(
        "--video", metavar="FRAMESxHxW", default=None,
        help="llm mode: a video instead of the image, tokenised as Qwen2.5-VL-7B does (e.g. 32x448x448: 16 "
        "temporal patches x 256 tokens); the selector scores it as pruning would with --video-window",
    )  # fmt: skip
    add_video_window_argument(p)
    add_keep_argument(p, sweep=True, default=DEFAULT_KEEPS)
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per setting (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up rounds (default 1)")
    p.add_argument("--decode-tokens", type=int, default=16, help="decode steps timed after each prefill (default 16)")
    p.add_argument("--device", default="auto", help="auto (cuda when torch sees a GPU, else cpu), cpu, cuda, cuda:1")
    p.add_argument(
        "--dtype", choices=DTYPES, default="auto", help="auto = float32 on cpu, float16 on a GPU (default auto)"
    )
    add_seed_argument(p)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice, one per core)")
    p.add_argument("--no-memory", action="store_true", help="skip the (profiled) peak-memory pass")
    p.add_argument(
        "--no-quiet-gate",
        action="store_true",
        help="on CPU, do not wait for other processes to go quiet before each sample",
    )
    p.add_argument(
        "--mode",
        choices=("llm", "end-to-end", "both"),
        default="llm",
        help="llm: the LLM on pruned-length sequences + the selector (default); end-to-end: generate() TTFT of a "
        "whole LLaVA-NeXT (small CLIP tower) through gprune.pruned; both",
    )
    add_json_argument(p)


def run_bench(args: argparse.Namespace) -> int:
    from gprune.benchmark import run_from_args

    return run_from_args(args)
