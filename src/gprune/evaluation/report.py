"""The comparison table (markdown) and the accuracy-against-FLOPs plot of a sweep."""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from gprune.evaluation.runner import RunSummary

_EXTRA_METRICS = {"pope": ("f1", "F1"), "mme": ("total", "MME score")}


def _unpruned(summaries: Sequence[RunSummary]) -> RunSummary | None:
    return next((s for s in summaries if s.method == "none"), None)


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def comparison_table(summaries: Sequence[RunSummary]) -> str:
    """One row per run: visual tokens, accuracy (and its change from the unpruned run), FLOPs, latency."""
    if not summaries:
        raise ValueError("no runs to tabulate")
    base = _unpruned(summaries)
    task = summaries[0].task
    extra = _EXTRA_METRICS.get(task)
    head = ["method", "keep", "visual tokens", "accuracy (%)", "Δ vs unpruned", "LLM prefill TFLOPs"]
    head += ["FLOPs vs unpruned", "latency (ms)", "samples"]
    if extra:
        head.insert(4, extra[1])
    lines = [f"Task: {task}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summaries:
        delta = None if base is None else 100.0 * (s.accuracy - base.accuracy)
        flops_ratio = None if base is None or not base.flops or s.flops is None else 100.0 * s.flops / base.flops
        row = [
            s.method,
            str(s.keep),
            _fmt(s.visual_tokens, ".1f"),
            _fmt(100.0 * s.accuracy, ".2f"),
            "–" if delta is None else f"{delta:+.2f}",
            _fmt(None if s.flops is None else s.flops / 1e12, ".4g"),
            "–" if flops_ratio is None else f"{flops_ratio:.1f}%",
            _fmt(1e3 * s.latency_s, ".1f"),
            str(s.samples),
        ]
        if extra:
            value = s.metrics.get(extra[0])
            row.insert(4, _fmt(None if value is None else (value if task == "mme" else 100.0 * value), ".2f"))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot_accuracy_vs_flops(summaries: Sequence[RunSummary], path: str | Path) -> Path | None:
    """Accuracy against LLM prefill FLOPs (visual tokens when FLOPs are unknown), one line per method.

    Returns the written path, or None (with a warning) when matplotlib is not installed: it is the
    optional ``eval`` / ``viz`` extra.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed (pip install 'gprune[eval]'): no plot written", stacklevel=2)
        return None
    use_flops = all(s.flops is not None for s in summaries)
    x_of = (lambda s: s.flops / 1e12) if use_flops else (lambda s: s.visual_tokens)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    lines: dict[str, list[RunSummary]] = defaultdict(list)
    for s in summaries:
        lines[s.method].append(s)
    for method, runs in lines.items():
        runs = sorted(runs, key=x_of)
        xs, ys = [x_of(s) for s in runs], [100.0 * s.accuracy for s in runs]
        if method == "none":
            ax.scatter(xs, ys, marker="*", s=160, color="black", label="unpruned", zorder=3)
        else:
            ax.plot(xs, ys, marker="o", label=method)
    ax.set_xlabel("LLM prefill TFLOPs per sample" if use_flops else "visual tokens per sample")
    ax.set_ylabel(f"{summaries[0].task} accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
