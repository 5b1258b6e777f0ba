"""Which transformers releases the Hugging Face integration supports, checked when it is first used.

The core (`graph_scores`, `select_tokens`, layouts, methods) needs only torch, so gprune installs next to
any transformers, e.g. a serving engine's older pin. The integration, though, relies on transformers >=
5.23 (``generate(mm_encoder_outputs=...)``, PIL image processors): on an older or missing transformers it
would fail deep inside a model call, so it checks first and says what to install.
"""

from __future__ import annotations

import re
from functools import cache

from gprune.errors import UserError

# Keep equal to the lower bound of the `hf` extra in pyproject.toml (a test checks it). No upper bound:
# none is known to break; add one here and in pyproject.toml when a release does.
MIN_TRANSFORMERS = "5.23"
FIX = f"pip install 'gprune[hf]' (or pip install -U 'transformers>={MIN_TRANSFORMERS}')"


class TransformersVersionError(UserError, ImportError):
    """transformers is missing or older than the integration supports (an ImportError and a UserError)."""


def release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string, padded to three parts: ``"5.24.0.dev0"`` -> ``(5, 24, 0)``."""
    match = re.match(r"\d+(?:\.\d+)*", version.strip())
    if match is None:
        raise ValueError(f"not a version: {version!r}")
    parts = tuple(int(p) for p in match.group().split("."))
    return (parts + (0, 0, 0))[:3] if len(parts) < 3 else parts


def check_transformers_version(installed: str | None) -> None:
    """Raise `TransformersVersionError` unless `installed` (None: not importable) is a supported release."""
    if installed is None:
        raise TransformersVersionError(
            f"gprune's Hugging Face integration needs transformers>={MIN_TRANSFORMERS}, which is not "
            f"installed (the core, e.g. gprune.select_tokens, works without it). Fix: {FIX}"
        )
    if release(installed) < release(MIN_TRANSFORMERS):
        raise TransformersVersionError(
            f"gprune's Hugging Face integration needs transformers>={MIN_TRANSFORMERS}; installed: "
            f"transformers {installed}. Fix: {FIX}"
        )


@cache
def require_transformers() -> str:
    """The installed transformers version, once it is known to be supported (checked once per process)."""
    try:
        import transformers
    except ModuleNotFoundError as err:  # a transformers that is present but broken raises its own error
        if err.name != "transformers":
            raise
        installed = None
    else:
        installed = str(getattr(transformers, "__version__", "0"))
    check_transformers_version(installed)
    return str(installed)
