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

from gprune.cli_options import add_json_argument, add_model_arguments, text_output, write_json
from gprune.cli_run import add_pruning_arguments, config_from_args, load_from_args, load_image, run_and_report

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
    p.add_argument("--model", default=None, help="a real checkpoint (hub id or local folder) instead of the tiny model")
    p.add_argument("--image", default=None, help="image path or URL (default: the bundled coffee photo)")
    p.add_argument("--prompt", default=DEFAULT_QUESTION, help="the question (default %(default)r)")
    add_pruning_arguments(p, max_new_tokens=8)
    add_model_arguments(p)
    add_json_argument(p)
    p.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    image = load_image(args.image or sample_photo_path())
    out = text_output(args)
    if args.model is None:
        from gprune.cli_model import resolve_device, resolve_dtype, seed_everything
        from gprune.testing import tiny_llava_next

        device = resolve_device(args.device)
        dtype = resolve_dtype(args.dtype, device)
        seed_everything(args.seed)
        start = time.perf_counter()
        tiny = tiny_llava_next(tile=336, patch=14, seed=args.seed)
        model, processor = tiny.model.to(device=device, dtype=dtype), tiny.processor
        print(
            "gprune demo: a tiny LLaVA-NeXT with RANDOM WEIGHTS (built offline in "
            f"{(time.perf_counter() - start) * 1e3:.0f} ms), so its answers are noise; the token counts and the "
            "pruning path are real. Run `gprune demo --model PATH` for a real checkpoint.",
            file=out,
        )
    else:
        model, processor = load_from_args(args)
        print(f"gprune demo: {args.model} ({model.config.model_type}, {model.dtype}, {model.device})", file=out)
    source = args.image or "bundled coffee.jpg (CC0)"
    print(f"image: {source} {image.width}x{image.height}; prompt: {args.prompt!r}", file=out)
    report = run_and_report(
        model, processor, image, args.prompt, config, compare=True, max_new_tokens=args.max_new_tokens, out=out
    )
    if args.model is None:
        print(
            "note: the tiny model's LLM is a sliver of its prefill, so times here show the selection overhead, "
            "not the saving; on a 7B LLM the prefill cost falls with the prompt tokens and FLOPs above.",
            file=out,
        )
    write_json(
        args,
        {"command": "demo", "model": args.model or "tiny random-weight LLaVA-NeXT",
         "images": [args.image or sample_photo_path()], "prompt": args.prompt, **report},
    )  # fmt: skip
    return 0
