"""`gprune flops`: what pruning saves for one image or one video, from a checkpoint's config alone (no weights)."""

from __future__ import annotations

import argparse
from importlib import resources
from typing import Any

from gprune.cli_options import (
    Keep,
    add_json_argument,
    add_keep_argument,
    add_video_window_argument,
    keeps_from_args,
    video_from_args,
    write_json,
)
from gprune.errors import UserError

DEFAULT_KEEP_RATIOS = (0.5, 0.33, 0.22, 0.11)
DEFAULT_PROMPT_TOKENS = 64
DEFAULT_IMAGE_SIZE = (672, 672)
KV_DTYPE_NAMES: tuple[str, ...] = ("bfloat16", "float16", "float32", "float8")
ATTENTION_MODE_NAMES: tuple[str, ...] = ("full", "causal")  # gprune.flops.ATTENTION_MODES (a test checks)


def kv_dtypes() -> dict[str, Any]:
    """KV-cache dtype names -> torch dtypes (torch imported here, not for ``--help``)."""
    import torch

    return {
        "float16": torch.float16,
        "bfloat16": torch.bfloat16,
        "float32": torch.float32,
        "float8": torch.float8_e4m3fn,
    }


def bundled_names() -> list[str]:
    """The bundled configs' names (`gprune.checkpoints.bundled_checkpoints`, read without importing it)."""
    folder = resources.files("gprune") / "configs"
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def parse_image_size(text: str) -> tuple[int, int]:
    """``HxW`` (height by width, pixels) or a single number for a square image."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size must be HxW or N (pixels), got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"image size must be HxW or N with positive pixels, got {text!r}")
    return values[0], values[1]


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "flops",
        help="visual tokens, LLM prefill FLOPs and KV-cache size before/after pruning, from a config",
        description=(
            "Analytic FLOPs (2 per multiply-add) of one image (or, with --video, one video) plus a text prompt, "
            "unpruned and for each keep setting. Bundled offline configs: " + ", ".join(bundled_names()) + "."
        ),
    )
    p.add_argument("model", nargs="?", help="bundled checkpoint name (see above)")
    p.add_argument("--config", help="path to a checkpoint's config.json (instead of a bundled name)")
    p.add_argument(
        "--image-size", type=parse_image_size, default=None, help="HxW pixels of the image (default 672x672)"
    )
    p.add_argument(
        "--video", metavar="FRAMESxHxW", default=None,
        help="a video instead of an image: FRAMES frames of HxW pixels, e.g. 16x448x448 (frames that reach the "
        "video processor, after fps sampling; Qwen2-VL/2.5-VL/3-VL: every temporal_patch_size=2 frames are "
        "one frame of tokens for the LLM; LLaVA-OneVision: each frame pooled 2x2, plus one newline). The vision "
        "encoder counts all frames; --keep applies to the video",
    )  # fmt: skip
    add_video_window_argument(p)
    p.add_argument(
        "--prompt-tokens",
        type=int,
        default=DEFAULT_PROMPT_TOKENS,
        help=f"text tokens in the prompt besides the image (default {DEFAULT_PROMPT_TOKENS})",
    )
    add_keep_argument(p, sweep=True, default=DEFAULT_KEEP_RATIOS)
    p.add_argument(
        "--attention", choices=ATTENTION_MODE_NAMES, default="full", help="attention counting (default %(default)s)"
    )
    p.add_argument("--kv-dtype", choices=KV_DTYPE_NAMES, default="float16", help="KV-cache dtype (default float16)")
    add_json_argument(p)
    p.set_defaults(handler=run_flops)


def flops_report(
    model: str,
    image_size: tuple[int, int] | None,
    prompt_tokens: int,
    keeps: list[Keep],
    *,
    attention: str = "full",
    kv_dtype: str = "float16",
    video: tuple[int, int, int] | None = None,
    video_window: int = 1,
) -> dict[str, Any]:
    """Token counts, FLOPs and KV-cache bytes, unpruned and per keep setting, as plain data.

    One image of `image_size` (height, width; None: 672x672), or with `video` = (frames, height, width)
    one video (`image_size` must then be None): the vision encoder and projector run on every frame, the
    LLM sees the video's frames x tokens per frame, kept as `gprune.video.kept_video_tokens` counts with
    `video_window` frames per graph.
    """
    from gprune.checkpoints import image_tokens, load_checkpoint, video_tokens
    from gprune.flops import kv_cache_bytes, llm_prefill_flops, projector_flops, vision_flops
    from gprune.layouts import kept_token_count

    if isinstance(prompt_tokens, bool) or not isinstance(prompt_tokens, int) or prompt_tokens < 0:
        raise UserError(f"prompt tokens must be a non-negative int, got {prompt_tokens!r}")
    if video is not None and image_size is not None:
        raise UserError("give an image size or a video, not both")
    checkpoint = load_checkpoint(model)
    config = checkpoint.config
    if video is None:
        image_size = tuple(image_size or DEFAULT_IMAGE_SIZE)
        tokens = image_tokens(checkpoint, *image_size)
    else:
        tokens = video_tokens(checkpoint, *video, window=video_window)
    vision = vision_flops(config, num_images=tokens.encoder_images, grid_thw=tokens.grid_thw)
    projector = projector_flops(config, tokens.projector_tokens)
    dtype = kv_dtypes()[kv_dtype]

    def row(keep: Keep | None) -> dict[str, Any]:
        # a video's layout is gprune.video.video_layout's, so this is kept_video_tokens' count
        visual = tokens.layout.length if keep is None else kept_token_count(tokens.layout, keep)
        sequence = visual + prompt_tokens
        return {
            "keep": keep,
            "visual_tokens": visual,
            "sequence_tokens": sequence,
            "llm_prefill_flops": llm_prefill_flops(config, sequence, attention=attention),
            "kv_cache_bytes": kv_cache_bytes(config, sequence, dtype),
        }

    rows = [row(None)] + [row(k) for k in keeps]
    base_llm = rows[0]["llm_prefill_flops"]
    for r in rows:
        r["llm_reduction"] = 1.0 - r["llm_prefill_flops"] / base_llm
        r["total_flops"] = vision + projector + r["llm_prefill_flops"]
        r["total_reduction"] = 1.0 - r["total_flops"] / rows[0]["total_flops"]
    report: dict[str, Any] = {"model": checkpoint.name, "source": checkpoint.source}
    if video is None:
        report["image_size"] = list(image_size)
    else:
        report["video"] = {
            "frames": tokens.input_frames,
            "height": video[1],
            "width": video[2],
            "resized": list(tokens.resized),
            "grid_thw": list(tokens.grid_thw) if tokens.grid_thw else None,
            "llm_frames": tokens.frames,
            "tokens_per_frame": tokens.tokens_per_frame,
            "window": tokens.window,
            "graphs": len(tokens.layout.groups),
            "always_kept_tail": tokens.always_kept_tail,
        }
    return {
        **report,
        "visual_layout": tokens.description,
        "prompt_tokens": prompt_tokens,
        "attention": attention,
        "kv_dtype": kv_dtype,
        "vision_flops": vision,
        "projector_flops": projector,
        "rows": rows,
    }


def _table_rows(report: dict[str, Any]) -> list[list[str]]:
    return [
        [
            "unpruned" if r["keep"] is None else str(r["keep"]),
            str(r["visual_tokens"]),
            str(r["sequence_tokens"]),
            f"{r['llm_prefill_flops'] / 1e12:.2f}",
            f"{100 * r['llm_reduction']:.2f}",
            f"{100 * r['total_reduction']:.2f}",
            f"{r['kv_cache_bytes'] / 2**20:.1f}",
        ]
        for r in report["rows"]
    ]


HEADERS = ["keep", "visual", "sequence", "LLM TFLOPs", "LLM -%", "total -%", "KV MiB"]


def _print_table(report: dict[str, Any]) -> None:
    from gprune.flops import format_flops

    if "video" in report:
        v = report["video"]
        what = f"{v['frames']}-frame {v['height']}x{v['width']} video"
    else:
        h, w = report["image_size"]
        what = f"{h}x{w} image"
    print(f"{report['model']}: {what} -> {report['visual_layout']}; {report['prompt_tokens']} prompt tokens")
    print(
        f"vision encoder {format_flops(report['vision_flops'])} + projector {format_flops(report['projector_flops'])}"
        " (unchanged by pruning after the projector; included in 'total')"
    )
    print(f"attention counted {report['attention']}; KV cache in {report['kv_dtype']}; 2 FLOPs per multiply-add")
    rows = _table_rows(report)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(x) for x in col) for col in zip(HEADERS, *rows, strict=True)]
        for line in [HEADERS, *rows]:
            print("  ".join(x.rjust(wd) for x, wd in zip(line, widths, strict=True)))
        return
    table = Table()
    for name in HEADERS:
        table.add_column(name, justify="right", no_wrap=True)
    for line in rows:
        table.add_row(*line)
    Console().print(table)


def run_flops(args: argparse.Namespace) -> int:
    if args.model is None and args.json in bundled_names():  # `--json llava-1.5-7b`: the name, not a path
        args.model, args.json = args.json, "-"
    if (args.model is None) == (args.config is None):
        raise UserError("name a bundled checkpoint or pass --config path/config.json (exactly one)")
    keeps: list[Keep] = keeps_from_args(args)
    video = video_from_args(args)
    if video is not None and args.image_size is not None:
        raise UserError("give --image-size or --video, not both (--video FRAMESxHxW carries the frame size)")
    report = flops_report(
        args.model or args.config,
        args.image_size,
        args.prompt_tokens,
        keeps,
        attention=args.attention,
        kv_dtype=args.kv_dtype,
        video=video,
        video_window=args.video_window,
    )
    if args.json != "-":
        _print_table(report)
    write_json(args, report)
    return 0
