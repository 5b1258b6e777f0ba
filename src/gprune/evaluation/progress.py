"""Progress for evaluation: one tqdm bar with an ETA on a terminal, nothing (or plain lines) elsewhere.

tqdm is in the optional ``eval`` extra; without it, or when stderr is not a terminal (a job log, a pipe), the
bar is a no-op object with the same methods, so callers never branch on it.
"""

from __future__ import annotations

import sys
from typing import Any


class NoBar:
    """Stands in for a tqdm bar that is not shown."""

    def update(self, n: int = 1) -> None:
        """Nothing to draw."""

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        """Nothing to draw."""

    def close(self) -> None:
        """Nothing to close."""


def stderr_is_terminal() -> bool:
    """Whether a progress bar would be seen (and not spill carriage returns into a log file)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def progress_bar(total: int, *, desc: str = "", enabled: bool = True, unit: str = "answer") -> Any:
    """A tqdm bar over `total` units (ETA from the rate of this call's work), or a `NoBar`.

    Shown only when `enabled`, tqdm is installed and stderr is a terminal.
    """
    if not enabled or not stderr_is_terminal():
        return NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the optional "eval" extra
        return NoBar()
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)
