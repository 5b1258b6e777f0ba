"""`gprune run`: answer one question about one or more images with a pruned model, and say what pruning did.

    gprune run --model llava-hf/llava-v1.6-vicuna-7b-hf --image photo.jpg --prompt "What is this?" \\
        --keep 0.33 --compare

Prints the answer, the visual tokens before -> after and the prefill time (time to the first new
token: vision encoder + selection + LLM prefill); ``--compare`` runs the unpruned model too. Several
``--image``s go into one prompt, in order. ``--json`` prints the same as JSON.
"""

from __future__ import annotations

import argparse
import time
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any, TextIO

from gprune.cli_options import (
    add_graph_arguments,
    add_json_argument,
    add_keep_argument,
    add_method_argument,
    add_model_arguments,
    add_positions_argument,
    check_method,
    keep_from_args,
    model_options_from_args,
    text_output,
    write_json,
)
from gprune.errors import UserError

BUSY_CORES = 0.25
"""Other processes using more CPU than this during a timing make it unreliable (as in `gprune bench`)."""


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="answer a question about an image with a pruned model and report tokens and prefill time",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="hub id or local folder of a supported checkpoint")
    p.add_argument(
        "--image", required=True, action="extend", nargs="+", metavar="IMAGE",
        help="image file path or http(s) URL; several (--image a.jpg b.jpg, or --image repeated) go into one prompt",
    )  # fmt: skip
    p.add_argument("--prompt", required=True, help="the question (the chat template is applied when there is one)")
    add_pruning_arguments(p)
    p.add_argument("--compare", action="store_true", help="also run the unpruned model and print both")
    add_model_arguments(p)
    add_json_argument(p)
    p.set_defaults(handler=run_command)


def add_pruning_arguments(p: argparse.ArgumentParser, *, max_new_tokens: int = 32) -> None:
    """Flags shared by `run` and `demo` (the names and defaults of `gprune.cli_options`)."""
    add_keep_argument(p)
    add_method_argument(p)
    add_positions_argument(p)
    add_graph_arguments(p)
    p.add_argument(
        "--max-new-tokens", type=int, default=max_new_tokens, help="answer length limit (default %(default)s)"
    )


def config_from_args(args: argparse.Namespace) -> Any:
    """The `GPruneConfig` of the pruning flags; any bad value is a one-line `UserError`."""
    from gprune.cli_model import method_params_with_seed
    from gprune.config import GPruneConfig
    from gprune.methods import available_methods

    keep = keep_from_args(args)
    method = check_method(args.method, available_methods())
    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    try:
        return GPruneConfig(
            keep=keep,
            positions=args.positions,
            method=method,
            similarity_threshold=args.similarity_threshold,
            temperature=args.temperature,
            iterations=args.iterations,
            method_params=method_params_with_seed(method, getattr(args, "seed", 0)),
        )
    except (TypeError, ValueError) as err:
        raise UserError(str(err)) from None


def load_image(source: str) -> Any:
    """An RGB image from a file path or an http(s) URL; a missing, unreadable or directory path is a `UserError`."""
    import io
    import urllib.error
    import urllib.request

    from PIL import Image, UnidentifiedImageError

    from gprune.cli_model import check_image_source

    path = check_image_source(source)
    try:
        if path is None:
            with urllib.request.urlopen(source, timeout=30) as response:  # noqa: S310 (http(s) checked)
                data = response.read()
            return Image.open(io.BytesIO(data)).convert("RGB")
        with Image.open(path) as img:
            return img.convert("RGB")
    except (urllib.error.URLError, TimeoutError) as err:
        raise UserError(f"cannot download image {source}: {err}") from None
    except (UnidentifiedImageError, OSError) as err:
        raise UserError(f"cannot read image {source}: {err}") from None


def build_prompt(processor: Any, question: str, images: int = 1) -> str:
    """The processor's chat template with `images` images, or ``USER: <image>\\n... ASSISTANT:`` without one."""
    if getattr(processor, "chat_template", None):
        content = [{"type": "image"}] * images + [{"type": "text", "text": question}]
        return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    image_token = getattr(processor, "image_token", "<image>")
    if image_token in question:
        return question
    return f"USER: {(image_token + chr(10)) * images}{question} ASSISTANT:"


def load_checkpoint(name: str, *, device: str = "auto", dtype: str = "auto", **kwargs: Any) -> tuple[Any, Any]:
    """Model and processor of a supported checkpoint (`gprune.cli_model.load_pretrained`)."""
    from gprune.cli_model import load_pretrained

    return load_pretrained(name, device=device, dtype=dtype, **kwargs)


def load_from_args(args: argparse.Namespace) -> tuple[Any, Any]:
    """The model and processor named by ``--model`` and the loading flags, seeded by ``--seed``."""
    from gprune.cli_model import load_pretrained, seed_everything

    seed_everything(args.seed)
    return load_pretrained(args.model, **model_options_from_args(args))


def printable(text: str) -> str:
    """The answer as plain text, the same in `run` and `demo`: control characters (which a random-weight
    model emits) become U+FFFD instead of moving the cursor or ringing the terminal; nothing else changes."""
    return "".join(
        ch if ch in "\n\t" or unicodedata.category(ch)[0] != "C" else "\N{REPLACEMENT CHARACTER}" for ch in text
    )


@dataclass
class RunResult:
    answer: str
    tokens_before: int
    tokens_after: int
    prefill_seconds: float
    total_seconds: float
    new_tokens: int
    selection_seconds: float = 0.0
    others_cores: float = 0.0  # CPU cores other processes used while this was timed


class _FirstTokenClock:
    """A generate streamer that notes when the first new token arrives (its first `put` is the prompt)."""

    def __init__(self) -> None:
        self.puts = 0
        self.first: float | None = None

    def put(self, value: Any) -> None:
        self.puts += 1
        if self.puts == 2:
            self.first = time.perf_counter()

    def end(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()


def _sync(model: Any) -> None:
    import torch

    if getattr(model, "device", torch.device("cpu")).type == "cuda":
        torch.cuda.synchronize()


def answer_once(model: Any, processor: Any, inputs: Any, max_new_tokens: int) -> RunResult:
    """Greedy answer with timing; visual token counts from the report (or the placeholders when unpruned)."""
    import torch

    from gprune.benchmark import MachineLoad
    from gprune.integrations.hf import last_report

    clock = _FirstTokenClock()
    load = MachineLoad()
    _sync(model)
    mark = load.snapshot()
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, streamer=clock)
    _sync(model)
    end = time.perf_counter()
    others = load.others_since(mark)
    prompt_length = inputs["input_ids"].shape[1]
    new = out[0, prompt_length:]
    report = last_report(model)
    placeholders = int((inputs["input_ids"] == model.config.image_token_id).sum())
    return RunResult(
        answer=processor.decode(new, skip_special_tokens=True).strip(),
        tokens_before=report.tokens_before if report else placeholders,
        tokens_after=report.tokens_after if report else placeholders,
        prefill_seconds=(clock.first or end) - start,
        total_seconds=end - start,
        new_tokens=int(new.numel()),
        selection_seconds=report.selection_seconds if report else 0.0,
        others_cores=others,
    )


def _prefill_flops(model_config: Any, tokens: int) -> float | None:
    from gprune.flops import llm_prefill_flops

    try:
        return float(llm_prefill_flops(model_config, tokens))
    except (ValueError, TypeError, AttributeError):  # a decoder the analytic counter does not describe
        return None


def describe(config: Any) -> str:
    keep = f"{config.keep} tokens per image" if isinstance(config.keep, int) else f"ratio {config.keep:g}"
    return f"{config.method}, keep {keep}, positions {config.positions}"


def busy_note(others_cores: float, device: str) -> str:
    """`` (machine busy: ...)`` when other processes used CPU during a CPU timing, else empty."""
    if device != "cpu" or others_cores < BUSY_CORES:
        return ""
    return (
        f" (machine busy: other processes used {others_cores:.1f} cores during the timing, so these times "
        "and the speed-up are unreliable)"
    )


def measure(
    model: Any, processor: Any, images: list[Any], question: str, config: Any, *, compare: bool, max_new_tokens: int
) -> dict[str, Any]:
    """Run pruned (and unpruned with `compare`) and return the report as plain data; the model is left unpruned."""
    from gprune.integrations.hf import apply, last_report, remove

    inputs = processor(images=images, text=[build_prompt(processor, question, len(images))], return_tensors="pt")
    inputs = inputs.to(model.device)
    if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    apply(model, config)
    try:
        answer_once(model, processor, inputs, 1)  # warm-up, so no timed run pays first-call costs
        pruned = answer_once(model, processor, inputs, max_new_tokens)
        report = last_report(model)
    finally:
        remove(model)
    base = answer_once(model, processor, inputs, max_new_tokens) if compare else None
    prompt_tokens = int(inputs["attention_mask"].sum())
    pruned_tokens = prompt_tokens - (pruned.tokens_before - pruned.tokens_after)
    per_image = [] if report is None else [[r.tokens_before, r.tokens_after] for r in report.images]
    return {
        "config": config.to_dict(),
        "description": describe(config),
        "device": str(model.device),
        "visual_tokens": [pruned.tokens_before, pruned.tokens_after],
        "visual_tokens_per_image": per_image,
        "prompt_tokens": [prompt_tokens, pruned_tokens],
        "llm_prefill_flops": [_prefill_flops(model.config, prompt_tokens), _prefill_flops(model.config, pruned_tokens)],
        "pruned": asdict(pruned),
        "unpruned": None if base is None else asdict(base),
    }


def format_report(report: dict[str, Any]) -> list[str]:
    """The text report of `measure`'s data."""
    pruned, base = report["pruned"], report["unpruned"]
    before, after = report["visual_tokens"]
    lines = [f"pruning: {report['description']}"]
    per_image = report["visual_tokens_per_image"]
    detail = "" if len(per_image) < 2 else "; per image " + ", ".join(f"{b} -> {a}" for b, a in per_image)
    lines.append(f"visual tokens: {before} -> {after} ({100.0 * after / max(before, 1):.1f}% kept{detail})")
    flops = report["llm_prefill_flops"]
    line = "LLM prompt tokens: {} -> {}".format(*report["prompt_tokens"])
    if None not in flops:
        line += f"; LLM prefill: {flops[0] / 1e9:.3g} -> {flops[1] / 1e9:.3g} GFLOPs"
    lines.append(line)
    line = f"prefill (to first token): {pruned['prefill_seconds'] * 1e3:.1f} ms pruned"
    others = pruned["others_cores"]
    if base is not None:
        speedup = base["prefill_seconds"] / max(pruned["prefill_seconds"], 1e-9)
        line += f", {base['prefill_seconds'] * 1e3:.1f} ms unpruned ({speedup:.2f}x)"
        others = max(others, base["others_cores"])
    line += f"; token selection {pruned['selection_seconds'] * 1e3:.1f} ms"
    lines.append(line + busy_note(others, report["device"]))
    lines.append(f"answer (pruned):   {printable(pruned['answer'])}")
    if base is not None:
        lines.append(f"answer (unpruned): {printable(base['answer'])}")
    return lines


def run_and_report(
    model: Any,
    processor: Any,
    images: Any,
    question: str,
    config: Any,
    *,
    compare: bool,
    max_new_tokens: int,
    out: TextIO | None = None,
) -> dict[str, Any]:
    """`measure`, then print `format_report` to `out` (stdout by default); returns the report."""
    import sys

    report = measure(
        model, processor, images if isinstance(images, list) else [images], question, config,
        compare=compare, max_new_tokens=max_new_tokens,
    )  # fmt: skip
    for line in format_report(report):
        print(line, file=out or sys.stdout)
    return report


def run_command(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    images = [load_image(source) for source in args.image]
    model, processor = load_from_args(args)
    out = text_output(args)
    print(f"model: {args.model} ({model.config.model_type}, {model.dtype}, {model.device})", file=out)
    sizes = ", ".join(f"{src} {im.width}x{im.height}" for src, im in zip(args.image, images, strict=True))
    print(f"image{'s' if len(images) > 1 else ''}: {sizes}", file=out)
    report = run_and_report(
        model, processor, images, args.prompt, config, compare=args.compare, max_new_tokens=args.max_new_tokens, out=out
    )
    write_json(args, {"command": "run", "model": args.model, "images": args.image, "prompt": args.prompt, **report})
    return 0
