"""Argument checks shared by every entry point, so bad input fails loudly with the same words everywhere."""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch
from torch import Tensor

Keep = float | int
"""A keep setting: a ratio in (0, 1] (float) or a token count >= 1 (int)."""


def check_keep(keep: object, name: str = "keep") -> Keep:
    """Return `keep` unchanged if it is a valid ratio or count, else raise naming the problem."""
    if isinstance(keep, bool) or not isinstance(keep, Real):
        raise TypeError(f"{name} must be a float ratio in (0, 1] or an int count >= 1, got {keep!r}")
    if isinstance(keep, Integral):
        if keep < 1:
            raise ValueError(f"{name} as a token count must be >= 1, got {keep}")
        return int(keep)
    keep = float(keep)
    if not math.isfinite(keep) or not 0.0 < keep <= 1.0:
        raise ValueError(f"{name} as a ratio must be in (0, 1], got {keep}")
    return keep


MAX_SIMILARITY_THRESHOLD = 1.0 - 1e-6
"""Thresholds from here to 1 are rejected: a computed self-similarity is 1 only up to rounding (fp32 at
D = 4096: within 1e-6; checked in tests), so such an edge test would be decided by rounding."""


def check_scoring_params(similarity_threshold: float, temperature: float, iterations: int) -> None:
    """Validate the three G-Prune hyper-parameters."""
    if isinstance(similarity_threshold, bool) or not isinstance(similarity_threshold, Real):
        raise TypeError(f"similarity_threshold must be a number, got {similarity_threshold!r}")
    if not -1.0 <= float(similarity_threshold) < MAX_SIMILARITY_THRESHOLD:
        if float(similarity_threshold) < 1.0 and float(similarity_threshold) >= -1.0:
            raise ValueError(
                f"similarity_threshold must be below 1 - 1e-6, got {similarity_threshold}: that close to 1 "
                "whether a token's own similarity (1 up to rounding) or a duplicate's counts as an edge is "
                "decided by rounding (the released code then drops self-loops)"
            )
        raise ValueError(f"similarity_threshold must be in [-1, 1 - 1e-6), got {similarity_threshold}")
    if isinstance(temperature, bool) or not isinstance(temperature, Real):
        raise TypeError(f"temperature must be a number, got {temperature!r}")
    if not math.isfinite(float(temperature)) or float(temperature) <= 0.0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    if isinstance(iterations, bool) or not isinstance(iterations, Integral):
        raise TypeError(f"iterations must be an int, got {iterations!r}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")


def check_features(
    features: object, mask: object = None, *, check_finite: bool = True
) -> tuple[Tensor, Tensor, bool]:
    """Validate features and mask; return (fp32 features (B, N, D), bool mask (B, N), input_was_2d).

    With ``check_finite=False`` the caller promises to call `check_finite_rows` on something it computes
    anyway (a row norm is NaN/Inf exactly when its row is), which spares a full pass over the features.
    """
    if not isinstance(features, Tensor):
        raise TypeError(f"features must be a torch.Tensor, got {type(features).__name__}")
    if not features.is_floating_point():
        raise TypeError(f"features must be a floating-point tensor, got dtype {features.dtype}")
    if features.dim() not in (2, 3):
        raise ValueError(
            f"features must have shape (N, D) or (B, N, D), got {features.dim()} dims {tuple(features.shape)}"
        )
    was_2d = features.dim() == 2
    x = features.unsqueeze(0) if was_2d else features
    b, n, d = x.shape
    if n == 0:
        raise ValueError("features hold no tokens (N = 0): there is nothing to select from")
    if d == 0:
        raise ValueError("features have feature dimension D = 0")
    x = x.float()
    if mask is None:
        m = torch.ones(b, n, dtype=torch.bool, device=x.device)
    else:
        if not isinstance(mask, Tensor):
            raise TypeError(f"mask must be a torch.Tensor of bools, got {type(mask).__name__}")
        m = mask.unsqueeze(0) if (was_2d and mask.dim() == 1) else mask
        if tuple(m.shape) != (b, n):
            raise ValueError(
                f"mask shape {tuple(mask.shape)} does not match features {tuple(features.shape)}: "
                f"expected {(n,) if was_2d else (b, n)}"
            )
        if m.dtype != torch.bool:
            raise TypeError(f"mask must have dtype torch.bool, got {m.dtype}")
        m = m.to(x.device)
        if not bool(m.any(dim=-1).all()):
            empty = [i for i, row in enumerate(m.any(dim=-1).tolist()) if not row]
            raise ValueError(f"mask leaves no valid token in batch item(s) {empty}")
    if check_finite:
        check_finite_rows(x, x.sum(dim=-1), m)
    return x, m, was_2d


def check_finite_rows(x: Tensor, row_summary: Tensor, mask: Tensor) -> None:
    """Raise if a valid row of `x` holds NaN/Inf; `row_summary` (B, N) is any per-row reduction of `x`."""
    if bool((torch.isfinite(row_summary) | ~mask).all()):
        return
    finite = torch.isfinite(x).all(dim=-1) | ~mask
    if bool(finite.all()):
        raise ValueError("features are too large for fp32: a token's norm overflows (rescale the features)")
    bad = finite.logical_not().nonzero()[:5].tolist()
    raise ValueError(f"features contain NaN or Inf at (batch, token) {bad} (first ones shown)")
