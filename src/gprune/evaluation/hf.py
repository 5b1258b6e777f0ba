"""The real model side of `gprune eval`: a Hugging Face checkpoint, pruned with `gprune.apply`.

One model is loaded once; each sweep setting re-applies its `GPruneConfig` to the same instance (or
removes pruning for the unpruned run). The answerer turns (image, prompt) into a greedy answer, and reads
what was pruned from `last_report`. FLOPs are the analytic LLM prefill FLOPs of the pruned prompt
(`gprune.flops.llm_prefill_flops`, causal attention excluded: "full" as torch's counter counts).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from gprune.config import GPruneConfig
from gprune.errors import UserError
from gprune.evaluation.provenance import canonical_json, digest
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


def _weights_digest(model: Any, values_per_tensor: int = 32) -> str:
    """Hash of every parameter's and buffer's name, shape and dtype plus up to 32 evenly spaced values.

    Sampling keeps this fast on a 7B model on a GPU (one small transfer), and fine-tunes, merges and other
    checkpoints of one architecture change essentially every tensor, so they get other hashes.
    """
    h = hashlib.sha256()
    samples = []
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    for name, tensor in tensors:
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        if tensor.is_meta or tensor.numel() == 0:
            continue
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // values_per_tensor)
        samples.append(flat[::step][:values_per_tensor].to(torch.float64))
    if samples:
        with torch.no_grad():
            values = torch.cat([v.to(samples[0].device) for v in samples]).cpu().numpy()
        h.update(values.tobytes())
    return h.hexdigest()


def _processor_digest(processor: Any) -> str:
    """Hash of the processor's settings, chat template and tokenizer (vocabulary, merges, special tokens)."""
    h = hashlib.sha256()
    for part in (
        lambda: processor.to_json_string(),
        lambda: str(getattr(processor, "chat_template", None)),
        lambda: processor.tokenizer.backend_tokenizer.to_str(),
        lambda: canonical_json(processor.tokenizer.get_vocab()),
    ):
        try:
            h.update(str(part()).encode("utf-8"))
        except Exception:  # noqa: BLE001 - a processor without that part; hash what there is
            h.update(b"-")
    return h.hexdigest()


def model_fingerprint(model: Any, processor: Any) -> dict[str, Any]:
    """What identifies a loaded model's answers, independent of where it was loaded from.

    config (without its name and path), dtype, transformers version, a sample of the weights and the
    processor: the same checkpoint under another path matches, another checkpoint of the same architecture
    does not.
    """
    import transformers

    config = {k: v for k, v in model.config.to_dict().items() if k not in ("_name_or_path", "transformers_version")}
    return {
        "fingerprint": digest(
            {"config": config, "weights": _weights_digest(model), "processor": _processor_digest(processor)}, 16
        ),
        "dtype": str(getattr(model, "dtype", None)),
        "transformers": transformers.__version__,
    }


class HfAnswererFactory:
    """Sweep factory for a transformers model: ``factory(config)`` (re)applies pruning and returns the answer
    function; ``factory.provenance`` says what produces the answers (model fingerprint, generation settings),
    which `sweep` puts into every run key."""

    def __init__(self, model: Any, processor: Any, *, max_new_tokens: int, prompt_template: str | None,
                 name: str | None) -> None:
        self._make = _answerer_factory(model, processor, max_new_tokens=max_new_tokens,
                                       prompt_template=prompt_template)
        self.provenance: dict[str, Any] = {
            "model": model_fingerprint(model, processor),
            "generation": {
                "max_new_tokens": max_new_tokens,
                "do_sample": False,
                "prompt_template": prompt_template,
                "device": model.device.type,
                "attn_implementation": getattr(model.config, "_attn_implementation", None),
            },
            "label": {"model": name or getattr(model.config, "_name_or_path", None) or type(model).__name__},
        }

    def __call__(self, config: GPruneConfig | None) -> Answerer:
        return self._make(config)


def hf_answerer_factory(
    model: Any,
    processor: Any,
    *,
    max_new_tokens: int = 16,
    prompt_template: str | None = None,
    name: str | None = None,
) -> HfAnswererFactory:
    """Sweep factory: for each setting, (re)apply pruning to `model` and return its answer function.

    `name` labels the model in tables (default: the path it was loaded from); it is not part of the key.
    """
    return HfAnswererFactory(model, processor, max_new_tokens=max_new_tokens, prompt_template=prompt_template,
                             name=name)


def _answerer_factory(
    model: Any,
    processor: Any,
    *,
    max_new_tokens: int,
    prompt_template: str | None,
) -> AnswererFactory:
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

