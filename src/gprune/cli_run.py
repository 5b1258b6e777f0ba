"""`gprune run`: answer one question about one image with a pruned model, and say what pruning did.

    gprune run --model llava-hf/llava-v1.6-vicuna-7b-hf --image photo.jpg --prompt "What is this?" \\
        --keep-ratio 0.33 --compare

Prints the answer, the visual tokens before -> after and the prefill time (time to the first new
token: vision encoder + selection + LLM prefill); ``--compare`` runs the unpruned model too.
"""

from __future__ import annotations

import argparse
import io
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from gprune.config import POSITION_MODES, GPruneConfig
from gprune.errors import UserError
from gprune.integrations.hf import apply, last_report, remove
from gprune.methods import available_methods


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="answer a question about an image with a pruned model and report tokens and prefill time",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="hub id or local path of a supported checkpoint")
    p.add_argument("--image", required=True, help="image file path or http(s) URL")
    p.add_argument("--prompt", required=True, help="the question (the chat template is applied when there is one)")
    add_pruning_arguments(p)
    p.add_argument("--compare", action="store_true", help="also run the unpruned model and print both")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.set_defaults(handler=run_command)


def add_pruning_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared by `run` and `demo`."""
    p.add_argument("--keep-ratio", type=float, default=0.33, help="fraction of each group's visual tokens kept")
    p.add_argument("--keep-tokens", type=int, default=None, help="visual token budget per image (overrides ratio)")
    p.add_argument("--positions", choices=POSITION_MODES, default="original", help="RoPE positions of kept tokens")
    p.add_argument("--method", choices=available_methods(), default="gprune", help="token selector")
    p.add_argument("--max-new-tokens", type=int, default=32)


def config_from_args(args: argparse.Namespace) -> GPruneConfig:
    keep = args.keep_tokens if args.keep_tokens is not None else args.keep_ratio
    try:
        return GPruneConfig(keep=keep, positions=args.positions, method=args.method)
    except (TypeError, ValueError) as err:
        flag = "--keep-tokens" if args.keep_tokens is not None else "--keep-ratio"
        raise UserError(f"{flag}: {err}") from None


def load_image(source: str) -> Image.Image:
    """An RGB image from a file path or an http(s) URL; a missing or unreadable image is a `UserError`."""
    try:
        if source.startswith(("http://", "https://")):
            with urllib.request.urlopen(source, timeout=30) as response:  # noqa: S310 (http(s) checked above)
                data = response.read()
            return Image.open(io.BytesIO(data)).convert("RGB")
        path = Path(source).expanduser()
        if not path.is_file():
            raise UserError(f"image file not found: {source}")
        with Image.open(path) as img:
            return img.convert("RGB")
    except (urllib.error.URLError, TimeoutError) as err:
        raise UserError(f"cannot download image {source}: {err}") from None
    except (UnidentifiedImageError, OSError) as err:
        raise UserError(f"cannot read image {source}: {err}") from None


def build_prompt(processor: Any, question: str) -> str:
    """The processor's chat template with one image, or ``USER: <image>\\n... ASSISTANT:`` without one."""
    if getattr(processor, "chat_template", None):
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return processor.apply_chat_template(messages, add_generation_prompt=True)
    image_token = getattr(processor, "image_token", "<image>")
    if image_token in question:
        return question
    return f"USER: {image_token}\n{question} ASSISTANT:"


def load_checkpoint(name: str, *, device: str, dtype: str) -> tuple[Any, Any]:
    """Model and processor of a supported checkpoint; the model type is checked before weights load."""
    from transformers import AutoConfig

    from gprune.adapters import get_adapter_class
    from gprune.evaluation.hf import load_model

    try:
        model_config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load model {name!r}: {str(err).splitlines()[0]}") from None
    get_adapter_class(model_config)
    return load_model(name, device=device, dtype=dtype)


@dataclass
class RunResult:
    answer: str
    tokens_before: int
    tokens_after: int
    prefill_seconds: float
    total_seconds: float
    new_tokens: int
    selection_seconds: float = 0.0


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
    if getattr(model, "device", torch.device("cpu")).type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def answer_once(model: Any, processor: Any, inputs: Any, max_new_tokens: int) -> RunResult:
    """Greedy answer with timing; visual token counts from the report (or the placeholders when unpruned)."""
    clock = _FirstTokenClock()
    _sync(model)
    start = time.perf_counter()
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, streamer=clock)
    _sync(model)
    end = time.perf_counter()
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
    )


def _prefill_flops(model_config: Any, tokens: int) -> float | None:
    from gprune.flops import llm_prefill_flops

    try:
        return float(llm_prefill_flops(model_config, tokens))
    except (ValueError, TypeError, AttributeError):  # a decoder the analytic counter does not describe
        return None


def describe(config: GPruneConfig) -> str:
    keep = f"{config.keep} tokens per image" if isinstance(config.keep, int) else f"ratio {config.keep:g}"
    return f"{config.method}, keep {keep}, positions {config.positions}"


def run_and_report(
    model: Any,
    processor: Any,
    image: Image.Image,
    question: str,
    config: GPruneConfig,
    *,
    compare: bool,
    max_new_tokens: int,
    show_answer: Any = str,
) -> tuple[RunResult, RunResult | None]:
    """Run pruned (and unpruned with `compare`) and print the report; the model is left unpruned."""
    inputs = processor(images=[image], text=[build_prompt(processor, question)], return_tensors="pt")
    inputs = inputs.to(model.device)
    if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    apply(model, config)
    try:
        answer_once(model, processor, inputs, 1)  # warm-up, so no timed run pays first-call costs
        pruned = answer_once(model, processor, inputs, max_new_tokens)
    finally:
        remove(model)
    base = answer_once(model, processor, inputs, max_new_tokens) if compare else None

    print(f"pruning: {describe(config)}")
    share = 100.0 * pruned.tokens_after / max(pruned.tokens_before, 1)
    print(f"visual tokens: {pruned.tokens_before} -> {pruned.tokens_after} ({share:.1f}% kept)")
    prompt_tokens = int(inputs["attention_mask"].sum())
    pruned_tokens = prompt_tokens - (pruned.tokens_before - pruned.tokens_after)
    flops = _prefill_flops(model.config, prompt_tokens), _prefill_flops(model.config, pruned_tokens)
    print(f"LLM prompt tokens: {prompt_tokens} -> {pruned_tokens}", end="")
    print(f"; LLM prefill: {flops[0] / 1e9:.3g} -> {flops[1] / 1e9:.3g} GFLOPs" if None not in flops else "")
    print(f"prefill (to first token): {pruned.prefill_seconds * 1e3:.1f} ms pruned", end="")
    if base is not None:
        speedup = base.prefill_seconds / max(pruned.prefill_seconds, 1e-9)
        print(f", {base.prefill_seconds * 1e3:.1f} ms unpruned ({speedup:.2f}x)", end="")
    print(f"; token selection {pruned.selection_seconds * 1e3:.1f} ms")
    print(f"answer (pruned):   {show_answer(pruned.answer)}")
    if base is not None:
        print(f"answer (unpruned): {show_answer(base.answer)}")
    return pruned, base


def run_command(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    image = load_image(args.image)
    model, processor = load_checkpoint(args.model, device=args.device, dtype=args.dtype)
    print(f"model: {args.model} ({model.config.model_type}, {model.dtype}, {model.device})")
    run_and_report(
        model, processor, image, args.prompt, config, compare=args.compare, max_new_tokens=args.max_new_tokens
    )
    return 0
