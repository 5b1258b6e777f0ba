"""The comparison table and plot read without the docs: keep labels, legend by method, axis units."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gprune.evaluation.report import accuracy_figure, comparison_table, keep_label, pruning_settings
from gprune.evaluation.runner import RunSummary

pytest.importorskip("matplotlib")


def _run(method: str, keep, accuracy: float, flops: float | None, *, model: str = "A", **pruning) -> RunSummary:
    key = {
        "task": "gqa",
        "model": {"fingerprint": model},
        "pruning": {"method": method} if method == "none" else {"method": method, "keep": keep, **pruning},
    }
    return RunSummary(
        task="gqa",
        method=method,
        keep=keep,
        samples=10,
        accuracy=accuracy,
        metrics={},
        visual_tokens=576 * (keep if isinstance(keep, float) else 1),
        visual_tokens_before=576.0,
        flops=flops,
        latency_s=0.1,
        results_file="r.jsonl",
        key_id=f"id-{method}-{keep}",
        key=key,
        sample_set="s",
        label=f"model {model}",
    )


RUNS = [
    _run("none", 1.0, 0.8, 4e12),
    _run("gprune", 0.5, 0.75, 2e12),
    _run("gprune", 0.25, 0.7, 1e12),
    _run("random", 0.5, 0.6, 2e12),
    _run("random", 64, 0.5, 0.4e12),
]


def test_points_are_labelled_by_keep_and_the_legend_names_methods():
    fig = accuracy_figure(RUNS)
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == sorted(["unpruned", "0.5", "0.25", "0.5", "64 tok"])
    legend = ax.get_legend()
    assert legend.get_title().get_text() == "method"
    assert [t.get_text() for t in legend.get_texts()] == ["unpruned", "gprune", "random"]
    assert ax.get_xlabel() == "LLM prefill compute per sample (TFLOPs)"
    assert ax.get_ylabel() == "gqa accuracy (%)"
    # each label sits on its point
    point = next(t for t in ax.texts if t.get_text() == "0.25")
    assert point.xy == pytest.approx((1.0, 70.0))


def test_without_flops_the_x_axis_is_visual_tokens():
    ax = accuracy_figure([_run("gprune", 0.5, 0.7, None)]).axes[0]
    assert ax.get_xlabel() == "visual tokens per sample"


def test_two_models_get_their_own_lines_and_tables():
    runs = RUNS[:2] + [_run("none", 1.0, 0.9, 4e12, model="B"), _run("gprune", 0.5, 0.85, 2e12, model="B")]
    labels = [t.get_text() for t in accuracy_figure(runs).axes[0].get_legend().get_texts()]
    assert labels == ["unpruned · model A", "gprune · model A", "unpruned · model B", "gprune · model B"]
    shared = [replace(r, label=f"{r.label} · data d.jsonl · 10 samples") for r in runs]
    legend = [t.get_text() for t in accuracy_figure(shared).axes[0].get_legend().get_texts()]
    assert legend == labels  # parts every setting shares are left out of the legend
    table = comparison_table(runs)
    assert table.count("Task: gqa") == 2 and table.count("| gprune | 0.5 |") == 2
    assert "| -5.00 |" in table  # each gprune row against its own model's unpruned run


def test_other_pruning_settings_are_shown():
    compact = _run("gprune", 0.5, 0.7, 2e12, positions="compact", similarity_threshold=0.7)
    assert pruning_settings(compact) == "positions=compact, s=0.7"
    assert pruning_settings(RUNS[1]) == "–"
    assert keep_label(640) == "640 tok" and keep_label(0.33) == "0.33" and keep_label(1.0) == "unpruned"
    labels = [t.get_text() for t in accuracy_figure([RUNS[1], compact]).axes[0].get_legend().get_texts()]
    assert labels == ["gprune", "gprune (positions=compact, s=0.7)"]
