"""The real model side of `gprune eval`: a Hugging Face checkpoint, pruned with `gprune.apply`.

One model is loaded once; each sweep setting re-applies its `GPruneConfig` to the same instance (or
removes pruning for the unpruned run). The answerer turns (image, prompt) into a greedy answer, and reads
what was pruned from `last_report`. FLOPs are the analytic LLM prefill FLOPs of the pruned prompt
(`gprune.flops.llm_prefill_flops`, causal attention excluded: "full" as torch's counter counts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image

from gprune.config import GPruneConfig
from gprune.errors import UserError
from gprune.evaluation.runner import Answer, Answerer
from gprune.evaluation.sweep import AnswererFactory

DEFAULT_PROMPT_TEMPLATE = "USER: <image>\n{prompt} ASSISTANT:"
"""Used when the processor has no chat template (LLaVA-1.5's conversation format)."""

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def load_model(path: str, *, device: str = "auto", dtype: str = "auto") -> tuple[Any, Any]:
    """Load a local (or cached) checkpoint and its processor; no network access is attempted for local paths."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        torch_dtype = torch.float16 if device.startswith("cuda") else torch.float32
    elif dtype in DTYPES:
        torch_dtype = DTYPES[dtype]
    else:
        raise UserError(f"dtype must be auto or one of {sorted(DTYPES)}, got {dtype!r}")
    try:
        processor = AutoProcessor.from_pretrained(path)
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch_dtype)
    except OSError as err:
        raise UserError(f"cannot load model from {path!r}: {err}") from None
    return model.to(device).eval(), processor


def _chat_prompt(processor: Any, prompt: str, template: str | None) -> str:
    if template is None and getattr(processor, "chat_template", None):
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return processor.apply_chat_template(messages, add_generation_prompt=True)
    return (template or DEFAULT_PROMPT_TEMPLATE).format(prompt=prompt)


def _prefill_flops(model_config: Any, tokens: int) -> float | None:
    try:
        from gprune.flops import llm_prefill_flops
    except ImportError:  # pragma: no cover - the FLOPs module ships with gprune; kept optional for older trees
        return None
    try:
        return float(llm_prefill_flops(model_config, tokens))
    except (ValueError, TypeError, AttributeError):
        return None  # an architecture the analytic counter does not describe


def hf_answerer_factory(
    model: Any,
    processor: Any,
    *,
    max_new_tokens: int = 16,
    prompt_template: str | None = None,
) -> AnswererFactory:
    """Sweep factory: for each setting, (re)apply pruning to `model` and return its answer function."""
    from gprune.integrations import apply, last_report, remove

    image_token_id = getattr(model.config, "image_token_id", None)
    if image_token_id is None:
        image_token_id = getattr(model.config, "image_token_index", None)

    def factory(config: GPruneConfig | None) -> Answerer:
        if config is None:
            remove(model)
        else:
            apply(model, config)

        @torch.no_grad()
        def answer(image_path: Path, prompt: str) -> Answer:
            with Image.open(image_path) as img:
                image = img.convert("RGB")
            text = _chat_prompt(processor, prompt, prompt_template)
            inputs = processor(images=[image], text=[text], return_tensors="pt").to(model.device)
            prompt_length = inputs["input_ids"].shape[1]
            before = int((inputs["input_ids"] == image_token_id).sum()) if image_token_id is not None else None
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            answer_text = processor.decode(out[0, prompt_length:], skip_special_tokens=True).strip()
            report = last_report(model) if config is not None else None
            after = report.tokens_after if report is not None else before
            dropped = (before - after) if (before is not None and after is not None) else 0
            prefill = int(inputs["attention_mask"].sum()) - dropped
            return Answer(
                text=answer_text,
                visual_tokens=int(after or 0),
                visual_tokens_before=before,
                prefill_tokens=prefill,
                flops=_prefill_flops(model.config, prefill),
            )

        return answer

    return factory

