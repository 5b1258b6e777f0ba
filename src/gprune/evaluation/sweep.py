"""Sweep methods x keep settings over one dataset and write the comparison.

Writes into `out_dir`: ``runs/<method>_keep-<keep>.jsonl`` (per-sample results, resumable),
``results.json`` (one summary per run), ``comparison.md`` (markdown table) and, when matplotlib is
installed, ``accuracy_vs_flops.png``. A keep of 1.0 means "no pruning": it runs once, as method "none".
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gprune.config import GPruneConfig
from gprune.evaluation.data import Sample
from gprune.evaluation.report import comparison_table, plot_accuracy_vs_flops
from gprune.evaluation.runner import Answerer, RunSummary, run_task
from gprune.evaluation.tasks import Task
from gprune.validation import Keep

UNPRUNED = "none"

AnswererFactory = Callable[[GPruneConfig | None], Answerer]
"""Builds the model call for one setting; None means the unpruned model."""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def plan_runs(
    methods: Sequence[str], keeps: Sequence[Keep], *, method_params: Mapping[str, dict[str, Any]] | None = None,
    positions: str = "original",
) -> list[tuple[str, Keep, GPruneConfig | None]]:
    """(method, keep, config) for each run; keep 1.0 becomes a single unpruned run, listed first."""
    params = dict(method_params or {})
    runs: list[tuple[str, Keep, GPruneConfig | None]] = []
    if any(isinstance(k, float) and k == 1.0 for k in keeps):
        runs.append((UNPRUNED, 1.0, None))
    for method in methods:
        for keep in keeps:
            if isinstance(keep, float) and keep == 1.0:
                continue
            config = GPruneConfig(keep=keep, method=method, positions=positions, method_params=params.get(method, {}))
            runs.append((method, keep, config))
    if not runs:
        raise ValueError("nothing to run: give at least one method and one keep setting")
    return runs


def sweep(
    samples: Sequence[Sample],
    task: Task,
    make_answerer: AnswererFactory,
    out_dir: str | Path,
    *,
    methods: Sequence[str],
    keeps: Sequence[Keep],
    method_params: Mapping[str, dict[str, Any]] | None = None,
    positions: str = "original",
    progress: bool = True,
    plot: bool = True,
) -> list[RunSummary]:
    """Run every (method, keep) setting, then write results.json, comparison.md and the plot."""
    out = Path(out_dir)
    runs = plan_runs(methods, keeps, method_params=method_params, positions=positions)
    summaries = []
    for method, keep, config in runs:
        results_file = out / "runs" / f"{_slug(method)}_keep-{keep}.jsonl"
        answer = make_answerer(config)
        summaries.append(
            run_task(samples, task, answer, results_file, method=method, keep=keep, progress=progress)
        )
    write_outputs(summaries, out, plot=plot)
    return summaries


def write_outputs(summaries: Sequence[RunSummary], out_dir: Path, *, plot: bool = True) -> dict[str, Path]:
    """results.json, comparison.md and (if matplotlib is available) accuracy_vs_flops.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"results": out_dir / "results.json", "table": out_dir / "comparison.md"}
    written["results"].write_text(json.dumps([s.to_dict() for s in summaries], indent=2) + "\n")
    written["table"].write_text(comparison_table(summaries) + "\n")
    if plot:
        figure = plot_accuracy_vs_flops(summaries, out_dir / "accuracy_vs_flops.png")
        if figure is not None:
            written["plot"] = figure
    return written
