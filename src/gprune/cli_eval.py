"""`gprune eval`: accuracy, visual tokens, FLOPs and latency of pruning methods on a local dataset.

    gprune eval --model llava-hf/llava-1.5-7b-hf --data textvqa_val.jsonl --task textvqa \\
        --method gprune random divprune --keep 1.0 0.5 0.33 0.11 --out results/textvqa

Writes per-sample results (resumable: rerun the same command after an interruption), results.json,
comparison.md and accuracy_vs_flops.png into --out. Answers are stored per model, dataset and settings and
reused only for the same ones; earlier runs in --out are kept in the outputs. See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gprune.cli_options import (
    Keep,
    add_json_argument,
    add_keep_argument,
    add_method_argument,
    add_model_arguments,
    add_positions_argument,
    json_to_stdout,
    keeps_from_args,
    methods_from_args,
    model_options_from_args,
    parse_keep_list,
    split_list,
    write_json,
)
from gprune.errors import UserError


def parse_keeps(text: str) -> list[Keep]:
    """"0.5,0.33,640": a value with a decimal point is a ratio, a whole number a token budget per image."""
    try:
        return parse_keep_list(text, name="keep")
    except UserError as err:
        raise argparse.ArgumentTypeError(f"bad keep value: {err}") from None


def parse_json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err.msg}): {text!r}") from None
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise argparse.ArgumentTypeError(f"expected a JSON object of objects keyed by method name, got {text!r}")
    return value


def parse_methods(text: str) -> list[str]:
    from gprune.methods import available_methods

    methods = split_list(text)
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
    p.add_argument(
        "--task", required=True, choices=["vqav2", "textvqa", "gqa", "pope", "mme"],
        help="picks the prompt suffix and the metric (lmms-eval's for each task)",
    )
    add_method_argument(p, sweep=True)
    add_keep_argument(p, sweep=True)
    p.add_argument("--out", type=Path, default=None, help="output folder (default gprune-eval/<task>)")
    p.add_argument("--image-root", type=Path, default=None, help="folder image paths are relative to")
    p.add_argument("--limit", type=int, default=None, help="only the first N samples")
    add_positions_argument(p)
    p.add_argument("--method-params", type=parse_json_object, default={},
                   help='JSON per method, e.g. \'{"random": {"seed": 1}, "dart": {"num_pivots": 4}}\'')
    p.add_argument(
        "--max-new-tokens", type=int, default=16, help="answer length limit (default 16, lmms-eval's VQA setting)"
    )
    p.add_argument("--prompt-template", default=None,
                   help="prompt with a {prompt} slot, used instead of the processor's chat template")
    add_model_arguments(p)
    add_json_argument(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plot", action="store_true", help="skip the accuracy-vs-FLOPs plot")
    p.add_argument("--fresh", action="store_true",
                   help="delete the answers and results gprune wrote into --out before starting (no resume)")
    p.set_defaults(handler=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from gprune.cli_model import load_pretrained, method_params_with_seed, resolve_device, seed_everything
    from gprune.evaluation import NothingEvaluatedError, clear_outputs, get_task, load_samples, sweep
    from gprune.evaluation.hf import hf_answerer_factory
    from gprune.evaluation.provenance import dataset_identity
    from gprune.methods import available_methods

    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be >= 1, got {args.limit}")
    methods, keeps = methods_from_args(args, available_methods()), keeps_from_args(args)
    resolve_device(args.device)  # a device this torch cannot use fails before the dataset and model load
    # --seed reaches seeded methods (random) as in `gprune run`, unless --method-params sets their seed.
    method_params = {m: method_params_with_seed(m, args.seed, args.method_params.get(m)) for m in methods}
    method_params = {m: p for m, p in method_params.items() if p}
    task = get_task(args.task)
    samples = load_samples(args.data, image_root=args.image_root, limit=args.limit)
    out = args.out if args.out is not None else Path("gprune-eval") / args.task
    if args.fresh:
        removed = clear_outputs(out)
        if removed:
            print(f"--fresh: deleted {len(removed)} earlier output files in {out}", file=sys.stderr)
    seed_everything(args.seed)
    model, processor = load_pretrained(args.model, **model_options_from_args(args))
    factory = hf_answerer_factory(
        model, processor, max_new_tokens=args.max_new_tokens, prompt_template=args.prompt_template,
        name=args.model,
    )
    provenance = dict(factory.provenance)
    provenance["dataset"] = dataset_identity(args.data)
    provenance["label"] = {**provenance["label"], "dataset": args.data.name}
    quiet = args.no_progress or getattr(args, "quiet", False)

    def log(line: str) -> None:
        print(line, file=sys.stderr)

    try:
        summaries = sweep(
            samples, task, factory, out, methods=methods, keeps=keeps,
            method_params=method_params, positions=args.positions,
            progress=not quiet, plot=not args.no_plot, provenance=provenance, log=log,
        )
    except NothingEvaluatedError as err:
        print(f"gprune eval: error: {err}", file=sys.stderr)
        return 1
    if not json_to_stdout(args):
        print((out / "comparison.md").read_text(), end="")
    write_json(args, json.loads((out / "results.json").read_text()))
    print(f"\nwrote {out / 'results.json'} ({len(summaries)} runs of this call; earlier runs in {out} kept)",
          file=sys.stderr)
    failed = [s for s in summaries if s.errors]
    if failed:
        total = sum(s.errors for s in failed)
        print(f"gprune eval: error: {total} answers failed ({failed[0].method} keep={failed[0].keep}, "
              f"{failed[0].first_error}); the results cover the answered samples; rerun the same command to "
              "retry the failed ones", file=sys.stderr)
        return 1
    return 0
