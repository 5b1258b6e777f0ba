"""lmms-eval ``model_args`` -> `GPruneConfig`, in the vocabulary of the CLI and the Python API.

Kept apart from `gprune.integrations.lmms_eval` (which needs lmms-eval installed) so the rules are tested
everywhere. ``keep=`` takes what ``--keep`` and ``GPruneConfig(keep=...)`` take (a ratio such as 0.5 or a
token budget such as 640; a bare 1 is refused as ambiguous); ``keep_ratio=`` / ``keep_tokens=`` still work
for one release with a deprecation message; an unknown key names the closest known one.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from typing import Any

from gprune.cli_options import DEFAULT_KEEP, Keep, did_you_mean, parse_keep
from gprune.errors import UserError

MODEL_ARGS: tuple[str, ...] = (
    "pretrained", "method", "keep", "positions", "similarity_threshold", "temperature", "iterations",
    "method_params", "device", "dtype", "attn_implementation", "trust_remote_code", "seed", "max_new_tokens",
    "chat_template", "batch_size",
)  # fmt: skip
"""Every key the gprune lmms-eval model takes (plus the deprecated ``keep_ratio`` / ``keep_tokens``)."""

DEPRECATED_MODEL_ARGS: dict[str, str] = {"keep_ratio": "keep", "keep_tokens": "keep"}


def _warn_stderr(message: str) -> None:
    print(f"gprune: warning: {message}", file=sys.stderr)


def check_model_arg_names(names: Iterable[str]) -> None:
    """Raise naming each unknown key with its closest known one (lmms-eval passes them all as keywords)."""
    known = (*MODEL_ARGS, *DEPRECATED_MODEL_ARGS)
    unknown = sorted(set(names) - set(known))
    if unknown:
        hints = "; ".join(f"{name!r}{did_you_mean(name, known)}" for name in unknown)
        raise ValueError(f"unknown gprune model_args: {hints}; known: {', '.join(MODEL_ARGS)}")


def keep_from_model_args(
    keep: Any = None,
    keep_ratio: Any = None,
    keep_tokens: Any = None,
    *,
    warn: Callable[[str], None] = _warn_stderr,
) -> Keep:
    """The keep setting of ``keep=`` (or the deprecated ``keep_ratio=`` / ``keep_tokens=``); default `DEFAULT_KEEP`."""
    given = [name for name, value in (("keep", keep), ("keep_ratio", keep_ratio), ("keep_tokens", keep_tokens))
             if value is not None]  # fmt: skip
    if len(given) > 1:
        raise ValueError(f"give one of keep / keep_ratio / keep_tokens, not {' and '.join(given)} (keep= is the name)")
    try:
        if keep is not None:
            return parse_keep(keep if isinstance(keep, (int, float)) else str(keep), name="keep")
        if keep_ratio is not None:
            warn("model_args keep_ratio= is deprecated and goes in the next release; use keep= (e.g. keep=0.5)")
            return parse_keep(float(keep_ratio), name="keep_ratio")
        if keep_tokens is not None:
            warn("model_args keep_tokens= is deprecated and goes in the next release; use keep= (e.g. keep=640)")
            value = float(keep_tokens)
            if not value.is_integer():
                raise ValueError(f"keep_tokens must be a whole number, got {keep_tokens}")
            if value == 1:
                return 1  # the old key said "tokens": one token is what was asked for
            return parse_keep(int(value), name="keep_tokens")
    except UserError as err:
        raise ValueError(str(err)) from None
    return DEFAULT_KEEP


def build_config(
    method: str,
    keep: Any,
    positions: str,
    similarity_threshold: float | None,
    temperature: float | None,
    iterations: int | None,
    method_params: Any,
    *,
    keep_ratio: Any = None,
    keep_tokens: Any = None,
) -> Any:
    """The `GPruneConfig` the model_args describe (None: method ``none``, no pruning)."""
    from gprune.config import GPruneConfig
    from gprune.methods import available_methods

    if method == "none":
        return None
    if method not in available_methods():
        raise ValueError(
            f"unknown method {method!r}{did_you_mean(method, available_methods())}; "
            f"available: none, {', '.join(available_methods())}"
        )
    value = keep_from_model_args(keep, keep_ratio, keep_tokens)
    if isinstance(method_params, str):
        method_params = json.loads(method_params) if method_params else {}
    extra: dict[str, Any] = {
        name: v
        for name, v in (
            ("similarity_threshold", similarity_threshold),
            ("temperature", temperature),
            ("iterations", iterations),
        )
        if v is not None
    }
    if "iterations" in extra:
        extra["iterations"] = int(extra["iterations"])
    return GPruneConfig(
        keep=value, method=method, positions=positions, method_params=dict(method_params or {}), **extra
    )
