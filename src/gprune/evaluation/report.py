"""The comparison table (markdown) and the accuracy-against-FLOPs plot of a sweep.

An output folder can hold runs of several settings (models, datasets, sample sets): each setting gets its
own table and its own lines in the plot, and the "vs unpruned" columns compare only within a setting.
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gprune.config import GPruneConfig
from gprune.evaluation.provenance import digest
from gprune.evaluation.runner import RunSummary
from gprune.validation import Keep

_EXTRA_METRICS = {"pope": ("f1", "F1"), "mme": ("total", "MME score")}


_DEFAULTS = GPruneConfig().to_dict()
_SHORT = {"similarity_threshold": "s", "temperature": "tau", "iterations": "T"}


def _unpruned(summaries: Sequence[RunSummary]) -> RunSummary | None:
    return next((s for s in summaries if s.method == "none"), None)


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def setting_of(s: RunSummary) -> tuple[Any, ...]:
    """Which runs are comparable: same key apart from the pruning settings, and the same answered samples."""
    if not s.key:
        return ("legacy", s.task)
    rest = {k: v for k, v in s.key.items() if k != "pruning"}
    return (digest(rest, 12), s.sample_set)


def group_settings(summaries: Sequence[RunSummary]) -> list[list[RunSummary]]:
    """Runs grouped by `setting_of`, groups and runs in first-seen order."""
    groups: dict[tuple[Any, ...], list[RunSummary]] = {}
    for s in summaries:
        groups.setdefault(setting_of(s), []).append(s)
    return list(groups.values())


def pruning_settings(s: RunSummary) -> str:
    """The pruning settings of a run other than method and keep that differ from the defaults, e.g.
    "positions=compact, s=0.7" ("–" when all are defaults), so two rows never look alike by accident."""
    pruning = (s.key or {}).get("pruning") or {}
    if pruning.get("method") == "none":
        return "–"
    parts = []
    for name, value in pruning.items():
        if name in ("method", "keep") or value == _DEFAULTS.get(name):
            continue
        shown = json.dumps(value, sort_keys=True) if isinstance(value, dict) else value
        parts.append(f"{_SHORT.get(name, name)}={shown}")
    return ", ".join(parts) or "–"


def _section_title(runs: Sequence[RunSummary]) -> str:
    s = runs[0]
    if not s.key:
        return f"Task: {s.task} · runs of an earlier gprune (what produced them was not recorded)"
    version = s.key.get("gprune")
    return f"Task: {s.task}" + (f" · {s.label}" if s.label else "") + (f" · gprune {version}" if version else "")


def _section(runs: Sequence[RunSummary]) -> list[str]:
    base = _unpruned(runs)
    task = runs[0].task
    extra = _EXTRA_METRICS.get(task)
    head = ["method", "keep", "visual tokens", "accuracy (%)", "Δ vs unpruned", "LLM prefill TFLOPs"]
    head += ["FLOPs vs unpruned", "latency (ms)", "samples", "other settings", "run"]
    if extra:
        head.insert(4, extra[1])
    lines = [_section_title(runs), "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in runs:
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
            str(s.samples) + (f" ({s.errors} failed)" if s.errors else ""),
            pruning_settings(s),
            s.key_id or "–",
        ]
        if extra:
            value = s.metrics.get(extra[0])
            row.insert(4, _fmt(None if value is None else (value if task == "mme" else 100.0 * value), ".2f"))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def comparison_table(summaries: Sequence[RunSummary]) -> str:
    """Markdown: one table per setting (model, dataset, task, generation, sample set), one row per run, with
    the change from that setting's unpruned run. Rows from different settings are never compared."""
    if not summaries:
        raise ValueError("no runs to tabulate")
    lines: list[str] = []
    for runs in group_settings(summaries):
        lines += ([""] if lines else []) + _section(runs)
    return "\n".join(lines)


def keep_label(keep: Keep | None) -> str:
    """How a point is labelled in the plot: a ratio as given (0.33), a token budget as "640 tok"."""
    if isinstance(keep, int) and not isinstance(keep, bool):
        return f"{keep} tok"
    return "unpruned" if keep in (None, 1.0) else f"{keep:g}"


def accuracy_figure(summaries: Sequence[RunSummary]) -> Any:
    """A matplotlib `Figure`: accuracy against LLM prefill TFLOPs per sample (visual tokens when FLOPs are
    unknown), one line per method (and setting), each point labelled with its keep, the unpruned run a star.

    Uses `matplotlib.figure.Figure` directly (no pyplot state); raises ImportError without matplotlib.
    """
    from matplotlib.figure import Figure

    if not summaries:
        raise ValueError("no runs to plot")
    use_flops = all(s.flops is not None for s in summaries)
    x_of = (lambda s: s.flops / 1e12) if use_flops else (lambda s: s.visual_tokens)
    groups = group_settings(summaries)
    names = _distinct_labels([runs[0].label or "earlier runs" for runs in groups])
    fig = Figure(figsize=(7, 4.5 + 0.25 * len(groups) * (len(groups) > 1)), dpi=120)
    ax = fig.add_subplot()
    markers = "os^Dv<>p"
    star_faces = ["black", "white", "grey", "gold", "tab:red"]
    for g, runs in enumerate(groups):
        suffix = f" · {names[g]}" if len(groups) > 1 else ""
        lines: dict[tuple[str, str], list[RunSummary]] = defaultdict(list)
        for s in runs:
            lines[(s.method, pruning_settings(s))].append(s)
        for (method, extra), line in lines.items():
            line = sorted(line, key=x_of)
            xs, ys = [x_of(s) for s in line], [100.0 * s.accuracy for s in line]
            name = method if extra == "–" else f"{method} ({extra})"
            if method == "none":
                face = star_faces[g % len(star_faces)]
                ax.scatter(xs, ys, marker="*", s=180, color=face, edgecolors="black", label=f"unpruned{suffix}",
                           zorder=3)
            else:
                ax.plot(xs, ys, marker=markers[g % len(markers)], linestyle="-" if g == 0 else "--",
                        label=f"{name}{suffix}")
            for s, x, y in zip(line, xs, ys, strict=True):
                ax.annotate(keep_label(s.keep), (x, y), textcoords="offset points", xytext=(4, 5), fontsize=8)
    tasks = sorted({s.task for s in summaries})
    ax.set_xlabel("LLM prefill compute per sample (TFLOPs)" if use_flops else "visual tokens per sample")
    ax.set_ylabel(f"{tasks[0]} accuracy (%)" if len(tasks) == 1 else "accuracy (%)")
    ax.set_title("Accuracy against compute; point labels: keep (ratio, or tokens per image)", fontsize=9)
    ax.margins(0.12)  # room for the point labels at the edges
    ax.grid(alpha=0.3)
    if len(groups) > 1:  # long labels: below the plot, where they cover no point
        ax.legend(title="method", fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=1)
    else:
        ax.legend(title="method", fontsize=8)
    fig.tight_layout()
    return fig


def _distinct_labels(labels: Sequence[str]) -> list[str]:
    """The parts ("model X", "data Y", "N samples") in which settings differ, so legend entries stay short."""
    parts = [label.split(" · ") for label in labels]
    common = set.intersection(*(set(p) for p in parts)) if parts else set()
    return [" · ".join(x for x in p if x not in common) or label for p, label in zip(parts, labels, strict=True)]


def plot_accuracy_vs_flops(summaries: Sequence[RunSummary], path: str | Path) -> Path | None:
    """Write `accuracy_figure` to `path`.

    Returns the written path, or None (with a warning) when matplotlib is not installed: it is the
    optional ``eval`` / ``viz`` extra.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        warnings.warn("matplotlib is not installed (pip install 'gprune[eval]'): no plot written", stacklevel=2)
        return None
    fig = accuracy_figure(summaries)
    path = Path(path)
    fig.savefig(path, bbox_inches="tight")
    return path
