"""The pruning setting of one vLLM deployment, read from the model's Hugging Face config.

vLLM has no per-model option a plugin can add, but ``--hf-overrides '{"gprune": {...}}'`` (``LLM(...,
hf_overrides=...)``) puts any JSON object on ``hf_config`` in every vLLM process: the front end that
sizes placeholders and the workers that run the model read the same setting, with no environment
variable. The object's fields are `gprune.GPruneConfig`'s (keep, method, similarity_threshold, ...), so
the serving and the transformers path are configured in the same words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gprune.config import GPruneConfig
from gprune.errors import UserError

CONFIG_KEY = "gprune"
"""The key of the pruning object in ``--hf-overrides``."""


class VllmConfigError(UserError, ValueError):
    """The ``gprune`` object in ``--hf-overrides`` is invalid for this model (raised at engine start-up)."""


@dataclass(frozen=True)
class ServingPruning:
    """A validated `GPruneConfig` plus the position mode this family supports in vLLM."""

    config: GPruneConfig
    family: str

    @property
    def keep(self) -> float | int:
        return self.config.keep

    @property
    def method(self) -> str:
        return self.config.method

    def selector_params(self) -> dict[str, Any]:
        return self.config.selector_params()


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return dict(value)
    to_dict = getattr(value, "to_dict", None)  # a nested PretrainedConfig, should vLLM ever wrap it
    if callable(to_dict):
        return dict(to_dict())
    raise VllmConfigError(f"--hf-overrides '{CONFIG_KEY}' must be a JSON object, got {type(value).__name__}")


def serving_pruning(hf_config: Any, *, family: str, positions: str) -> ServingPruning | None:
    """The deployment's pruning setting, or None when ``hf_config`` carries no ``gprune`` object.

    `positions` is the one position mode `family` supports in vLLM; a different explicit choice is an
    error that says why, raised when the engine starts (processor and model both call this).
    """
    raw = getattr(hf_config, CONFIG_KEY, None)
    if raw is None:
        return None
    data = _as_dict(raw)
    wanted = data.pop("positions", positions)
    if wanted != positions:
        raise VllmConfigError(
            f"gprune on vLLM supports positions={positions!r} for {family}, got {wanted!r}: "
            + _POSITION_REASONS.get(family, "")
        )
    try:
        config = GPruneConfig.from_dict({**data, "positions": positions})
    except (TypeError, ValueError) as err:
        raise VllmConfigError(f"invalid --hf-overrides '{CONFIG_KEY}' for {family}: {err}") from err
    return ServingPruning(config, family)


_POSITION_REASONS = {
    "llava_next": (
        "vLLM numbers a 1-D RoPE prompt contiguously (computed tokens + arange) and sizes each image's "
        "placeholders before its features exist, so the kept tokens' unpruned positions cannot be carried; "
        "they are numbered contiguously ('compact')."
    ),
    "qwen2_5_vl": (
        "kept tokens keep their unpruned (t, h, w) mRoPE positions ('original'), carried with the features "
        "(see gprune.integrations.vllm.qwen_vl)."
    ),
}
_POSITION_REASONS["qwen2_vl"] = _POSITION_REASONS["qwen2_5_vl"]
