"""`gprune demo`: the whole pruning path, offline, on a fresh machine.

Without ``--model`` it builds a tiny random-weight LLaVA-NeXT with the released model's token layout
(336 px tiles of 14 px patches: a 576-token base view plus the anyres grid and newline tokens) and
runs the bundled photo (``gprune/assets/coffee.jpg``, CC0) through ``gprune.apply`` and the unpruned
model. The weights are random, so the answers are noise: the demo shows the mechanics (which tokens
are kept, how many, what prefill costs), not quality. With ``--model PATH`` it runs a real checkpoint.
"""

from __future__ import annotations

import argparse
import time
from importlib import resources

from gprune.cli_run import add_pruning_arguments, config_from_args, load_checkpoint, load_image, run_and_report
from gprune.errors import UserError

DEFAULT_QUESTION = "What is in this picture?"


def sample_photo_path() -> str:
    """The bundled CC0 sample photo (a coffee cup, from scikit-image's data)."""
    return str(resources.files("gprune") / "assets" / "coffee.jpg")


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="prune a tiny random-weight LLaVA-NeXT (offline) or a real checkpoint on the bundled photo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default=None, help="a real checkpoint (hub id or local path) instead of the tiny model")
    p.add_argument("--image", default=None, help="image path or URL (default: the bundled coffee photo)")
    p.add_argument("--prompt", default=DEFAULT_QUESTION)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    add_pruning_arguments(p)
    p.set_defaults(handler=run_demo, max_new_tokens=8)


def run_demo(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    image = load_image(args.image or sample_photo_path())
    if args.model is None:
        from gprune.testing import tiny_llava_next

        start = time.perf_counter()
        tiny = tiny_llava_next(tile=336, patch=14)
        model, processor = tiny.model, tiny.processor
        print(
            "gprune demo: a tiny LLaVA-NeXT with RANDOM WEIGHTS (built offline in "
            f"{(time.perf_counter() - start) * 1e3:.0f} ms), so its answers are noise; the token counts and the "
            "pruning path are real. Run `gprune demo --model PATH` for a real checkpoint."
        )
        show = ascii  # random byte tokens need not be printable text
    else:
        model, processor = load_checkpoint(args.model, device=args.device, dtype=args.dtype)
        print(f"gprune demo: {args.model} ({model.config.model_type}, {model.dtype}, {model.device})")
        show = str
    print(f"image: {args.image or 'bundled coffee.jpg (CC0)'} {image.width}x{image.height}; prompt: {args.prompt!r}")
    run_and_report(
        model,
        processor,
        image,
        args.prompt,
        config,
        compare=True,
        max_new_tokens=args.max_new_tokens,
        show_answer=show,
    )
    if args.model is None:
        print(
            "note: the tiny model's LLM is a sliver of its prefill, so times here show the selection overhead, "
            "not the saving; on a 7B LLM the prefill cost falls with the prompt tokens and FLOPs above."
        )
    return 0
