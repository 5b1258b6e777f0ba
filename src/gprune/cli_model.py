"""Loading what a command names (device, checkpoint, processor, image) with one-line errors that say what to do.

Why: a new user's first mistakes (``--device cuda`` on a CPU build of torch, a mistyped local path that
transformers then treats as a hub id and retries for 30 s, a folder holding weights but no processor, a
directory given as an image) used to end in long tracebacks or in transformers' 300-character messages.
Each check here runs before anything slow and raises a `UserError`, which the CLI prints as one line
with exit status 2. torch and transformers are imported inside the functions (``gprune --help`` stays fast).
"""

from __future__ import annotations

import inspect
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gprune.errors import UserError

DTYPE_NAMES = ("float32", "bfloat16", "float16")


def resolve_device(text: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; a device this torch cannot use is a `UserError`."""
    import torch

    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError):
        raise UserError(f"--device {text!r} is not a device: use auto, cpu, cuda, cuda:1 or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"--device {text}: this torch ({torch.__version__}) sees no CUDA device; use --device cpu "
                "(or auto), or install a CUDA build of torch"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {text}: torch sees {torch.cuda.device_count()} CUDA device(s), numbered from 0")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UserError(f"--device {text}: this machine has no MPS (Apple GPU) device; use --device cpu or auto")
    return str(device)


def resolve_dtype(text: str, device: str) -> Any:
    """The torch dtype for ``--dtype``: ``auto`` is float16 on a GPU and float32 on a CPU."""
    import torch

    if text == "auto":
        return torch.float32 if device == "cpu" else torch.float16
    if text not in DTYPE_NAMES:
        raise UserError(f"--dtype must be auto or one of {', '.join(DTYPE_NAMES)}, got {text!r}")
    return getattr(torch, text)


def looks_like_path(name: str) -> bool:
    """Whether `name` means a local folder rather than a hub id (``org/name``).

    A path: it starts with ``./``, ``../``, ``/`` or ``~``, exists, has more than one ``/`` (a hub id has
    one), or its parent folder exists locally (``models/llava`` next to a ``models`` folder).
    """
    if name.startswith(("./", "../", "/", "~", ".\\", "..\\")) or name in (".", "..") or os.path.isabs(name):
        return True
    path = Path(name).expanduser()
    if path.exists() or name.count("/") > 1 or "\\" in name:
        return True
    parent = path.parent
    return str(parent) not in ("", ".") and parent.is_dir()


def check_model_source(name: str) -> None:
    """Refuse a local model path that is not a saved checkpoint; leave hub ids to transformers."""
    if not looks_like_path(name):
        return
    path = Path(name).expanduser()
    if not path.exists():
        raise UserError(f"no such model directory: {name} (a hub id looks like org/name; a local path must exist)")
    if not path.is_dir():
        raise UserError(f"{name} is a file: --model takes a checkpoint folder (with config.json) or a hub id")
    if not (path / "config.json").is_file():
        raise UserError(
            f"{name} has no config.json, so it is not a saved checkpoint: save one with "
            f"model.save_pretrained({name!r}) and processor.save_pretrained({name!r})"
        )


def check_image_source(source: str) -> Path | None:
    """The local image path (None for an http(s) URL); a missing file or a directory is a `UserError`."""
    if source.startswith(("http://", "https://")):
        return None
    path = Path(source).expanduser()
    if path.is_dir():
        raise UserError(f"--image {source} is a directory: give an image file (jpg, png, ...)")
    if not path.is_file():
        raise UserError(f"image file not found: {source}")
    return path


def _first_line(err: BaseException) -> str:
    """The first sentence of an error's message: transformers' messages run to several hundred characters."""
    text = str(err).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    return line.split(". ")[0].rstrip(".")


def load_processor(name: str, *, trust_remote_code: bool = False) -> Any:
    """The checkpoint's processor (tokenizer + image processor), or a one-line error with the fix."""
    from transformers import AutoProcessor

    hint = (
        f"no processor could be loaded from {name} (a folder written by model.save_pretrained holds weights "
        f"only): also run processor.save_pretrained({name!r}) with the model's processor"
    )
    try:
        processor = AutoProcessor.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        raise UserError(f"{hint} [{_first_line(err)}]") from None
    if not hasattr(processor, "image_processor") and not hasattr(processor, "tokenizer"):
        raise UserError(f"{hint} [found a {type(processor).__name__} only]")
    if not hasattr(processor, "image_processor"):
        raise UserError(f"{hint} [found a tokenizer but no image processor]")
    return processor


def load_pretrained(
    name: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    check_config: Callable[[Any], None] | None = None,
) -> tuple[Any, Any]:
    """Model and processor of a supported checkpoint, checked in order of cost.

    Device and path first (no loading), then the config (is the model type supported? `check_config`,
    when given, is called with it first and may raise a `UserError` of its own), then the processor, and
    only then the weights. The one loading path of every command (`run`, `demo`, `eval`, `visualize`).
    """
    from transformers import AutoConfig, AutoModelForImageTextToText

    from gprune.adapters import get_adapter_class

    device = resolve_device(device)
    check_model_source(name)
    torch_dtype = resolve_dtype(dtype, device)
    try:
        model_config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        hint = ""
        if "connect" in str(err).lower() and not looks_like_path(name):
            hint = " (offline? a hub id needs the network or the local cache; give a local folder, e.g. ./model)"
        raise UserError(f"cannot load model {name!r}: {_first_line(err)}{hint}") from None
    if check_config is not None:
        check_config(model_config)
    get_adapter_class(model_config)
    processor = load_processor(name, trust_remote_code=trust_remote_code)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForImageTextToText.from_pretrained(name, **kwargs)
    except (OSError, ValueError, ImportError) as err:
        raise UserError(f"cannot load the weights of {name!r}: {_first_line(err)}") from None
    return model.to(device).eval(), processor


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators (sampling, seeded methods, random test inputs)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def method_params_with_seed(method: str, seed: int, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """`params` plus ``seed`` when the method takes one (``random``), so ``--seed`` reaches it."""
    from gprune.methods import get_method

    out = dict(params or {})
    if "seed" in inspect.signature(get_method(method)).parameters:
        out.setdefault("seed", seed)
    return out
