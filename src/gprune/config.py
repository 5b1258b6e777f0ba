"""`GPruneConfig`: every pruning setting in one validated, serialisable object."""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from gprune.core import DEFAULT_ITERATIONS, DEFAULT_SIMILARITY_THRESHOLD, DEFAULT_TEMPERATURE
from gprune.methods import available_methods
from gprune.methods.gprune import Precision, check_precision
from gprune.validation import Keep, check_keep, check_scoring_params
from gprune.video import check_window

PositionMode = Literal["original", "compact"]
POSITION_MODES: tuple[str, ...] = ("original", "compact")

GPRUNE_METHODS: tuple[str, ...] = ("gprune", "gprune-paper")
"""The methods that score with G-Prune's graph, and so read `GPruneConfig.precision`."""

PAPER_SIMILARITY_THRESHOLD = 0.7
"""The threshold the paper's ablation reports as best; the released code defaults to 0.5."""


@dataclass(frozen=True)
class GPruneConfig:
    """What to prune and how.

    keep: ratio in (0, 1] of each group's tokens, or a token budget per image (int >= 1); default 0.5, the
        released code's and every gprune entry point's. ``keep=1`` (an int: one token) warns, since 1.0 (keep
        all) is usually meant; the CLI and lmms-eval's model_args refuse a bare 1 as ambiguous.
    similarity_threshold: cosine threshold s for graph edges, in [-1, 1). 0.5 is the released code's
        default; 0.7 is the paper's best ablation setting (`PAPER_SIMILARITY_THRESHOLD`).
    temperature: softmax temperature tau > 0 of the transition matrix.
    iterations: propagation steps T >= 1.
    positions: "original" keeps each kept token's unpruned RoPE position (the released code);
        "compact" renumbers positions contiguously (for mRoPE models: each position value becomes its rank
        among the values kept tokens still use, which closes gaps but keeps an image's row/column order).
    method: registered selector name ("gprune" or a baseline).
    precision: G-Prune's arithmetic. "fp32" (default) computes the method accurately; "released-fp16"
        repeats the fp16 arithmetic of the authors' released code as their CUDA run computed it, to
        reproduce the paper's selections (docs/algorithm.md: how often the two keep the same set).
        Applies to "gprune" and "gprune-paper" only.
    method_params: extra keyword arguments for a baseline method (e.g. {"seed": 0}).
    video_keep: `keep` for video tokens (same forms: a ratio of each graph, or a budget per video); None
        (default): `keep`. Lets images and videos be budgeted apart.
    video_window: frames per video graph: 1 (default) scores each frame as its own graph, k > 1 one
        spatio-temporal graph per k frames, 0 the whole video as one graph (`gprune.video`).
    """

    keep: Keep = 0.5
    similarity_threshold: float = DEFAULT_SIMILARITY_THRESHOLD
    temperature: float = DEFAULT_TEMPERATURE
    iterations: int = DEFAULT_ITERATIONS
    positions: PositionMode = "original"
    method: str = "gprune"
    method_params: dict[str, Any] = field(default_factory=dict)
    precision: Precision = "fp32"
    video_keep: Keep | None = None
    video_window: int = 1

    def __post_init__(self) -> None:
        check_keep(self.keep)
        if type(self.keep) is int and self.keep == 1:  # 1 vs 1.0: the one keep value people mistype
            warnings.warn(
                "GPruneConfig(keep=1) keeps ONE visual token per image; write keep=1.0 for no pruning",
                UserWarning,
                stacklevel=3,
            )
        check_scoring_params(self.similarity_threshold, self.temperature, self.iterations)
        if self.positions not in POSITION_MODES:
            raise ValueError(f"positions must be one of {POSITION_MODES}, got {self.positions!r}")
        if self.method not in available_methods():
            raise ValueError(f"method must be one of {available_methods()}, got {self.method!r}")
        check_precision(self.precision)
        if self.precision != "fp32" and self.method not in GPRUNE_METHODS:
            raise ValueError(
                f"precision={self.precision!r} applies to G-Prune ({', '.join(GPRUNE_METHODS)}); "
                f"method {self.method!r} always runs in fp32"
            )
        if self.video_keep is not None:
            check_keep(self.video_keep)
        check_window(self.video_window)
        if not isinstance(self.method_params, dict):
            raise TypeError(f"method_params must be a dict, got {type(self.method_params).__name__}")

    def selector_params(self) -> dict[str, Any]:
        """Keyword arguments for the configured method."""
        if self.method == "gprune":
            return {
                "similarity_threshold": self.similarity_threshold,
                "temperature": self.temperature,
                "iterations": self.iterations,
                "precision": self.precision,
                **self.method_params,
            }
        if self.method in GPRUNE_METHODS:
            return {"precision": self.precision, **self.method_params}
        return dict(self.method_params)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPruneConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown GPruneConfig field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GPruneConfig:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"GPruneConfig JSON must be an object, got {type(data).__name__}")
        return cls.from_dict(data)
