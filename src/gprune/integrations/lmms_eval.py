"""lmms-eval model ``gprune``: any supported Hugging Face checkpoint, pruned with `gprune.apply`.

Registered through the entry-point group ``lmms_eval.models`` (lmms-eval >= 0.7), so after
``pip install gprune lmms-eval`` this works with no change to lmms-eval::

    accelerate launch --num_processes 8 -m lmms_eval --model gprune \\
        --model_args pretrained=llava-hf/llava-v1.6-vicuna-7b-hf,method=gprune,keep=640 \\
        --tasks textvqa_val,gqa,pope,mme --batch_size 1 --output_path results/

model_args: ``pretrained`` (checkpoint; the adapter is chosen by its ``config.model_type``),
``method`` (a registered method, or ``none`` for the unpruned model through the same code path),
``keep`` (as ``--keep`` and ``GPruneConfig(keep=...)``: a ratio per group such as 0.5, as the released
G-Prune code, or a token budget per image such as 640, always-kept tokens included; default 0.5;
``keep_ratio`` / ``keep_tokens`` are deprecated spellings), ``positions`` (original | compact),
``similarity_threshold``, ``temperature``, ``iterations``, ``method_params`` (JSON object, e.g.
``'{"seed": 1}'``), ``device`` (auto | cpu | cuda | cuda:N), ``dtype`` (auto | float16 | bfloat16 |
float32), ``attn_implementation``, ``trust_remote_code``, ``seed``, ``max_new_tokens`` (default when the
task sets none), ``chat_template``. An unknown key is an error naming the closest known one.

Under ``accelerate launch`` each process loads the model on its own GPU (``cuda:<local rank>``) and
lmms-eval shards the requests by ``rank`` / ``world_size``; the model is not wrapped in DDP (inference
only), so `gprune.apply` prunes the very instance that runs.

lmms-eval's CLI catches every error of a run, logs it and exits 0 with no results. In a process running
that CLI, a gprune model therefore checks at exit (`_ExitGuard`) that the run evaluated something, and
otherwise ends the process with status 1 and one line naming the cause (docs/evaluation.md).
"""

from __future__ import annotations

import atexit
import functools
import importlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

import torch
from packaging.version import Version
from PIL import Image

from gprune.integrations import apply, last_report
from gprune.model_args import build_config, check_model_arg_names

try:
    from lmms_eval.api.model import lmms
    from lmms_eval.models.registry_v2 import ModelManifest
except ImportError as err:  # pragma: no cover - only imported by lmms-eval itself
    raise ImportError(
        "gprune.integrations.lmms_eval needs lmms-eval (pip install lmms-eval); see docs/evaluation.md"
    ) from err

IMAGE_TOKEN = "<image>"
FALLBACK_TEMPLATE = "USER: {content} ASSISTANT:"
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
# lmms-eval up to this version imports filelock._api once evaluation starts; filelock 4.3 removed it.
_LAST_LMMS_EVAL_NEEDING_FILELOCK_API = Version("0.7.3")
_Method = TypeVar("_Method", bound=Callable[..., list[Any]])


def check_lmms_eval_runtime() -> None:
    """Raise ImportError, naming the fix, if lmms-eval's evaluator will fail on an import it makes late.

    lmms-eval 0.7.3 imports ``filelock._api`` after building the model; with filelock >= 4.3 that
    fails and its CLI exits 0 having evaluated nothing. Checked here, before a checkpoint is loaded.
    """
    try:
        if Version(version("lmms-eval")) > _LAST_LMMS_EVAL_NEEDING_FILELOCK_API:
            return
    except PackageNotFoundError:  # pragma: no cover - lmms_eval importable without its metadata
        pass
    try:
        importlib.import_module("filelock._api")
    except ImportError as err:
        raise ImportError(
            'lmms-eval 0.7.3 imports filelock._api, which filelock 4.3 removed: pip install "filelock<4.3"'
        ) from err


def _running_lmms_eval_cli() -> bool:
    """Whether this process runs lmms-eval's CLI (``python -m lmms_eval``, ``lmms-eval``, under accelerate)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", None) == "lmms_eval.__main__" or "lmms_eval.__main__" in sys.modules


class _ExitGuard:
    """Gives a failed lmms-eval CLI run through gprune a non-zero exit status.

    lmms-eval's CLI (0.7.3) catches the exceptions of a run, logs them and exits 0 writing no results.
    Armed when a gprune model is constructed in a process running that CLI, the guard checks at exit:
    if the model, its construction or a request raised, or (global rank 0 only: lmms-eval gives a rank
    no request when a task has fewer documents than processes) the model answered no request without
    ``--use_cache`` (which may answer all from its cache), it prints one line naming the cause and ends
    the process with status 1. ``os._exit`` is the only way an exit handler can set the status; the
    handlers registered before this one (at import time: logging, loguru, multiprocessing) are skipped.
    """

    def __init__(self) -> None:
        self.armed = False
        self.answered = 0
        self.error: str | None = None

    def arm(self) -> None:
        if not self.armed and _running_lmms_eval_cli():
            self.armed = True
            atexit.register(self.check)

    @contextmanager
    def watch(self) -> Iterator[None]:
        """Record the first exception raised inside (lmms-eval will swallow it), then re-raise it."""
        try:
            yield
        except Exception as err:
            if self.error is None:
                self.error = " ".join(f"{type(err).__name__}: {err}".split())
            raise

    def failure(self) -> str | None:
        """Why the run failed, or None."""
        if self.error is not None:
            return f"the gprune model failed: {self.error}"
        uses_cache = any(arg.split("=")[0] == "--use_cache" for arg in sys.argv[1:])
        if self.answered == 0 and not uses_cache and int(os.environ.get("RANK", "0")) == 0:
            return "lmms-eval built the gprune model but evaluated no request (its error is logged above)"
        return None

    def check(self) -> None:
        reason = self.failure() if self.armed else None
        if reason is None:
            return
        sys.stdout.flush()
        print(f"gprune: {reason}; exit status 1 (lmms-eval's CLI exits 0 after errors)", file=sys.stderr, flush=True)
        logging.shutdown()
        os._exit(1)


_GUARD = _ExitGuard()


def _watched(method: _Method) -> _Method:
    """Count a request method's answers for the exit guard and record what it raises."""

    @functools.wraps(method)
    def run(self: Any, requests: list[Any]) -> list[Any]:
        with _GUARD.watch():
            results = method(self, requests)
        _GUARD.answered += len(results)
        return results

    return run  # type: ignore[return-value]


def manifest() -> ModelManifest:
    """Entry point payload: the model id ``gprune`` and its class."""
    return ModelManifest(model_id="gprune", simple_class_path="gprune.integrations.lmms_eval.GPruneLMM")


class GPruneLMM(lmms):
    """lmms-eval model wrapping a transformers image-text model pruned by gprune (batch size 1)."""

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        method: str = "gprune",
        keep: float | int | str | None = None,
        positions: str = "original",
        similarity_threshold: float | None = None,
        temperature: float | None = None,
        iterations: int | None = None,
        method_params: Any = None,
        device: str = "auto",
        dtype: str = "auto",
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
        seed: int = 0,
        max_new_tokens: int = 128,
        chat_template: str | None = None,
        batch_size: int = 1,
        keep_ratio: float | None = None,
        keep_tokens: int | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__()
        _GUARD.arm()
        with _GUARD.watch():
            check_lmms_eval_runtime()
            check_model_arg_names(unknown)
            if int(batch_size) != 1:
                raise ValueError("the gprune lmms-eval model runs batch_size 1 (pruned lengths differ per image)")
            from accelerate import Accelerator
            from transformers import AutoModelForImageTextToText, AutoProcessor

            self.gprune_config = build_config(
                method, keep, positions, similarity_threshold, temperature, iterations, method_params,
                keep_ratio=keep_ratio, keep_tokens=keep_tokens,
            )  # fmt: skip
            torch.manual_seed(int(seed))
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            accelerator = Accelerator()
            if accelerator.num_processes > 1 and str(device).startswith("cuda"):
                device = f"cuda:{accelerator.local_process_index}"  # one GPU per process
            self._rank, self._world_size = accelerator.local_process_index, accelerator.num_processes
            self.accelerator = accelerator
            self._device = torch.device(device)
            if dtype == "auto":
                torch_dtype: Any = torch.float16 if self._device.type == "cuda" else torch.float32
            elif dtype in _DTYPES:
                torch_dtype = _DTYPES[dtype]
            else:
                raise ValueError(f"dtype must be auto or one of {sorted(_DTYPES)}, got {dtype!r}")
            kwargs: dict[str, Any] = {"trust_remote_code": bool(trust_remote_code)}
            if attn_implementation:
                kwargs["attn_implementation"] = attn_implementation
            self.processor = AutoProcessor.from_pretrained(pretrained, trust_remote_code=bool(trust_remote_code))
            if chat_template is not None:
                self.processor.chat_template = chat_template
            self._model = AutoModelForImageTextToText.from_pretrained(pretrained, dtype=torch_dtype, **kwargs)
            self._model.to(self._device).eval()
            if self.gprune_config is not None:
                apply(self._model, self.gprune_config)  # raises naming the supported model types
            self.tokenizer = self.processor.tokenizer
            self.max_new_tokens = int(max_new_tokens)
            self.visual_tokens = {"before": 0, "after": 0, "calls": 0}

    @property
    def model(self) -> torch.nn.Module:
        return self._model

    @property
    def device(self) -> torch.device:
        return self._device

    # ------------------------------------------------------------------ prompts and inputs

    def _images(self, doc_to_visual: Any, doc_id: Any, task: str, split: str) -> list[Image.Image]:
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual is not None else []
        images = [v for v in (visuals or []) if isinstance(v, Image.Image)]
        if len(images) != len(visuals or []):
            raise ValueError(f"{task}: the gprune model handles images only, got {[type(v).__name__ for v in visuals]}")
        return [im.convert("RGB") for im in images]

    def _prompt(self, context: str, n_images: int, continuation: str | None = None) -> str:
        text = context.replace(IMAGE_TOKEN, "").strip() if IMAGE_TOKEN in context else context
        if getattr(self.processor, "chat_template", None):
            content = [{"type": "image"}] * n_images + [{"type": "text", "text": text}]
            messages = [{"role": "user", "content": content}]
            if continuation is not None:
                messages.append({"role": "assistant", "content": [{"type": "text", "text": continuation}]})
            return self.processor.apply_chat_template(messages, add_generation_prompt=continuation is None)
        prompt = FALLBACK_TEMPLATE.format(content=(IMAGE_TOKEN + "\n") * n_images + text)
        return prompt if continuation is None else f"{prompt} {continuation}"

    def _inputs(self, text: str, images: list[Image.Image]) -> dict[str, Any]:
        if images:
            inputs = self.processor(images=images, text=[text], return_tensors="pt")
        else:
            inputs = self.processor(text=[text], return_tensors="pt")
        return inputs.to(self._device)

    def _count(self, n_images: int) -> None:
        report = last_report(self._model) if (self.gprune_config is not None and n_images) else None
        if report is not None:
            self.visual_tokens["before"] += report.tokens_before
            self.visual_tokens["after"] += report.tokens_after
            self.visual_tokens["calls"] += 1

    # ------------------------------------------------------------------ lmms-eval API

    @_watched
    @torch.no_grad()
    def generate_until(self, requests: list[Any]) -> list[str]:
        results = []
        for request in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            gen_kwargs = dict(gen_kwargs or {})
            until = gen_kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            images = self._images(doc_to_visual, doc_id, task, split)
            inputs = self._inputs(self._prompt(context, len(images)), images)
            temperature = float(gen_kwargs.get("temperature", 0) or 0)
            generate_kwargs: dict[str, Any] = {
                "max_new_tokens": int(gen_kwargs.get("max_new_tokens", self.max_new_tokens)),
                "num_beams": int(gen_kwargs.get("num_beams", 1) or 1),
                "do_sample": temperature > 0,
            }
            if temperature > 0:
                generate_kwargs["temperature"] = temperature
                if gen_kwargs.get("top_p") is not None:
                    generate_kwargs["top_p"] = float(gen_kwargs["top_p"])
            out = self._model.generate(**inputs, **generate_kwargs)
            self._count(len(images))
            text = self.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            for stop in until:
                if stop:
                    text = text.split(stop)[0]
            results.append(text.strip())
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), results[-1])
        return results

    @_watched
    @torch.no_grad()
    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        """Sum of log-probabilities of the continuation tokens, and whether greedy decoding yields them.

        Under pruning the model returns logits in the original token layout (gprune's forward wrapper),
        so the continuation's positions are the same as without pruning.
        """
        results = []
        for request in requests:
            context, doc_to_target, doc_to_visual, doc_id, task, split = request.args
            doc = self.task_dict[task][split][doc_id]
            continuation = doc_to_target if isinstance(doc_to_target, str) else doc_to_target(doc)
            images = self._images(doc_to_visual, doc_id, task, split)
            prompt_len = self._inputs(self._prompt(context, len(images)), images)["input_ids"].shape[1]
            inputs = self._inputs(self._prompt(context, len(images), continuation), images)
            logits = self._model(**inputs).logits.float()
            self._count(len(images))
            targets = inputs["input_ids"][0, prompt_len:]
            if targets.numel() == 0:
                raise ValueError(f"{task}: empty continuation for doc {doc_id}")
            scores = torch.log_softmax(logits[0, prompt_len - 1 : -1], dim=-1)
            logprob = float(scores.gather(-1, targets.unsqueeze(-1)).sum())
            greedy = bool((scores.argmax(dim=-1) == targets).all())
            results.append((logprob, greedy))
        return results

    @_watched
    def generate_until_multi_round(self, requests: list[Any]) -> list[str]:
        raise NotImplementedError("the gprune lmms-eval model does not support multi-round generation")
