"""`gprune eval`: accuracy, visual tokens, FLOPs and latency of pruning methods on a local dataset.

    gprune eval --model llava-hf/llava-1.5-7b-hf --data textvqa_val.jsonl --task textvqa \\
        --methods gprune,random,divprune --keep 1.0,0.5,0.33,0.11 --out results/textvqa

Writes per-sample results (resumable: rerun the same command after an interruption), results.json,
comparison.md and accuracy_vs_flops.png into --out. See docs/evaluation.md for the dataset format.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gprune.errors import UserError
from gprune.methods import available_methods
from gprune.validation import Keep, check_keep


def parse_keeps(text: str) -> list[Keep]:
    """"0.5,0.33,640": a value with a decimal point is a ratio, a whole number a token budget per image."""
    keeps: list[Keep] = []
    for part in text.split(","):
        part = part.strip()
        try:
            value: Keep = float(part) if "." in part else int(part)
            keeps.append(check_keep(value))
        except (ValueError, TypeError) as err:
            raise argparse.ArgumentTypeError(
                f"bad keep value {part!r}: use ratios like 0.5 (1.0 = unpruned) or token counts like 640 ({err})"
            ) from None
    return keeps


def parse_json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err.msg}): {text!r}") from None
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise argparse.ArgumentTypeError(f"expected a JSON object of objects keyed by method name, got {text!r}")
    return value


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in available_methods()]
    if unknown or not methods:
        raise argparse.ArgumentTypeError(f"unknown method(s) {unknown}; available: {', '.join(available_methods())}")
    return methods


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate pruning methods x keep settings on a local JSONL dataset (resumable)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="checkpoint folder or hub id (loaded with transformers)")
    p.add_argument("--data", required=True, type=Path, help="JSONL dataset: image, question, answers per line")
    p.add_argument("--task", required=True, choices=["vqav2", "textvqa", "gqa", "pope", "mme"])
    p.add_argument("--methods", type=parse_methods, default=["gprune"], help="comma-separated method names")
    p.add_argument("--keep", type=parse_keeps, default=[0.5], help="comma-separated keep settings (default 0.5)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default gprune-eval/<task>)")
    p.add_argument("--image-root", type=Path, default=None, help="folder image paths are relative to")
    p.add_argument("--limit", type=int, default=None, help="only the first N samples")
    p.add_argument("--positions", choices=["original", "compact"], default="original")
    p.add_argument("--method-params", type=parse_json_object, default={},
                   help='JSON per method, e.g. \'{"random": {"seed": 1}, "dart": {"num_pivots": 4}}\'')
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--prompt-template", default=None,
                   help="prompt with a {prompt} slot, used instead of the processor's chat template")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plot", action="store_true", help="skip the accuracy-vs-FLOPs plot")
    p.set_defaults(handler=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from gprune.evaluation import get_task, load_samples, sweep
    from gprune.evaluation.hf import hf_answerer_factory, load_model

    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be >= 1, got {args.limit}")
    task = get_task(args.task)
    samples = load_samples(args.data, image_root=args.image_root, limit=args.limit)
    out = args.out if args.out is not None else Path("gprune-eval") / args.task
    model, processor = load_model(args.model, device=args.device, dtype=args.dtype)
    factory = hf_answerer_factory(
        model, processor, max_new_tokens=args.max_new_tokens, prompt_template=args.prompt_template
    )
    summaries = sweep(
        samples, task, factory, out, methods=args.methods, keeps=args.keep,
        method_params=args.method_params, positions=args.positions,
        progress=not args.no_progress, plot=not args.no_plot,
    )
    print((out / "comparison.md").read_text(), end="")
    print(f"\nwrote {out / 'results.json'} ({len(summaries)} runs)", file=sys.stderr)
    return 0
