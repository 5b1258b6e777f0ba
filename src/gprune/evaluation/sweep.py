"""Sweep methods x keep settings over one dataset and write the comparison.

Writes into `out_dir`: ``runs/<method>_keep-<keep>-<key id>.jsonl`` (per-sample answers of one run key,
resumable), ``results.json`` (one summary per run: this call's and every earlier one in the folder),
``comparison.md`` (markdown tables, one per model/dataset setting) and, when matplotlib is installed,
``accuracy_vs_flops.png``. A keep of 1.0 means "no pruning": it runs once, as method "none".
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from gprune.config import GPruneConfig
from gprune.errors import UserError
from gprune.evaluation.data import Sample
from gprune.evaluation.progress import NoBar, progress_bar
from gprune.evaluation.provenance import describe_difference, key_id, samples_identity
from gprune.evaluation.report import comparison_table, plot_accuracy_vs_flops
from gprune.evaluation.runner import (
    Answerer,
    NothingEvaluatedError,
    RunSummary,
    read_run_file,
    reusable_answers,
    run_header,
    run_task,
)
from gprune.evaluation.tasks import Task
from gprune.validation import Keep

UNPRUNED = "none"
RUNS_DIR = "runs"
RESULTS_FILE = "results.json"
TABLE_FILE = "comparison.md"
PLOT_FILE = "accuracy_vs_flops.png"

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


def run_key(task: Task, config: GPruneConfig | None, provenance: Mapping[str, Any]) -> dict[str, Any]:
    """Everything that produced a run's answers: gprune version, task, the full pruning config (or "none"),
    and the caller's provenance (model fingerprint, dataset hash, generation settings; not its "label")."""
    import gprune

    key: dict[str, Any] = {k: v for k, v in provenance.items() if k != "label"}
    key.update(
        gprune=gprune.__version__,
        task=task.name,
        pruning=config.to_dict() if config is not None else {"method": UNPRUNED},
    )
    return key


def run_path(out_dir: Path, method: str, keep: Keep, key: Mapping[str, Any]) -> Path:
    """``runs/<method>_keep-<keep>-<key id>.jsonl``: one answers file per key, so other keys never collide."""
    return Path(out_dir) / RUNS_DIR / f"{_slug(method)}_keep-{keep}-{key_id(key)}.jsonl"


def setting_label(provenance: Mapping[str, Any], samples: int) -> str:
    """A short human description of what a run was evaluated on: model, dataset and sample count."""
    names = dict(provenance.get("label") or {})
    model = provenance.get("model") or {}
    dataset = provenance.get("dataset") or {}
    parts = []
    if names.get("model") or model.get("fingerprint"):
        fp = str(model.get("fingerprint", ""))[:8]
        name = str(names.get("model", "?"))
        if Path(name).is_absolute():  # a local folder: its name; hub ids ("org/model") stay as they are
            name = Path(name).name
        parts.append(f"model {name}" + (f" [{fp}]" if fp else ""))
    sha = str(dataset.get("sha256", ""))[:8]
    parts.append(f"data {names.get('dataset') or 'samples'}" + (f" [{sha}]" if sha else ""))
    parts.append(f"{samples} samples")
    return " · ".join(parts)


def _setting(key: Mapping[str, Any]) -> str:
    return key_id({k: v for k, v in key.items() if k != "pruning"})


def _other_keys_note(out_dir: Path, keys: Sequence[dict[str, Any]]) -> str | None:
    """A note when `out_dir` holds answers of another model, dataset, task or generation setting (other
    pruning settings of the same setting are just other runs of one comparison: no note)."""
    ours = {_setting(k) for k in keys}
    for path in sorted((out_dir / RUNS_DIR).glob("*.jsonl")):
        try:
            with path.open(encoding="utf-8") as f:
                header = json.loads(f.readline()).get("header") or {}
        except (OSError, ValueError):
            continue
        found = header.get("key")
        if isinstance(found, dict) and _setting(found) in ours:
            continue
        similar = [k for k in keys if isinstance(found, dict) and k["pruning"] == found.get("pruning")] or list(keys)
        what = describe_difference(found, similar[0]) if isinstance(found, dict) else "settings not recorded"
        return (
            f"note: {out_dir} holds answers of other settings, e.g. {path.name}, which differs in {what}; "
            "they are not reused and stay as separate entries in results.json (--fresh or another --out starts over)"
        )
    return None


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
    provenance: Mapping[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[RunSummary]:
    """Run every (method, keep) setting, then merge them into results.json, comparison.md and the plot.

    `provenance` says what else produced the answers: "model" (a fingerprint), "dataset" (a hash; default:
    a hash of the samples' content), "generation" (settings), and "label" (names for people, not matched).
    Without it, `make_answerer.provenance` is used when the factory has one (`hf_answerer_factory` does).
    Answers are reused only under the same key; runs of other keys in `out_dir` stay in the outputs.
    `progress` shows one bar over all unanswered (run, sample) pairs; `log` gets notes and, when no bar is
    shown, one line per finished run. Returns this call's runs; raises `NothingEvaluatedError` (after
    writing what was answered) when a run answered no sample, and `UserError` when `samples` is empty.
    """
    if not samples:
        raise UserError("nothing to evaluate: the dataset has no samples (after --limit and filters)")
    out = Path(out_dir)
    given = provenance if provenance is not None else getattr(make_answerer, "provenance", None)
    prov: dict[str, Any] = dict(given or {})
    prov.setdefault("dataset", samples_identity(samples))
    runs = plan_runs(methods, keeps, method_params=method_params, positions=positions)
    keys = [run_key(task, config, prov) for _, _, config in runs]
    todo = []
    for (method, keep, _), key in zip(runs, keys, strict=True):
        path = run_path(out, method, keep, key)
        done = reusable_answers(read_run_file(path, run_header(task.name, method, keep, key)), samples)
        todo.append(sum(s.id not in done for s in samples))
    note = _other_keys_note(out, keys) if (out / RUNS_DIR).is_dir() else None
    if note and log is not None:
        log(note)
    bar = progress_bar(sum(todo), desc="eval", enabled=progress)
    label = setting_label(prov, len(samples))
    summaries: list[RunSummary] = []
    failures: list[str] = []
    try:
        for i, ((method, keep, config), key, n) in enumerate(zip(runs, keys, todo, strict=True), start=1):
            bar.set_description(f"[{i}/{len(runs)}] {method} keep={keep}")
            answer = make_answerer(config) if n else _nothing_left
            try:
                summary = run_task(samples, task, answer, run_path(out, method, keep, key), method=method,
                                   keep=keep, key=key, progress=False, bar=bar)
            except NothingEvaluatedError as err:
                failures.append(str(err))
                continue
            summaries.append(replace(summary, label=label))
            if log is not None and progress and isinstance(bar, NoBar):
                log(f"[{i}/{len(runs)}] {method} keep={keep}: accuracy {100 * summary.accuracy:.2f}% over "
                    f"{summary.samples} samples ({n} answered now, {summary.errors} failed)")
    finally:
        bar.close()
    if summaries:
        write_outputs(merge_results(out, summaries), out, plot=plot)
    if failures:
        what = (
            f"all {len(runs)} runs evaluated nothing" if not summaries
            else f"{len(failures)} of {len(runs)} runs evaluated nothing (the others are in {out / RESULTS_FILE})"
        )
        raise NothingEvaluatedError(f"{what}; first: {failures[0]}; fix the cause and rerun to retry")
    return summaries


def _nothing_left(image: Path, prompt: str) -> Any:  # pragma: no cover - never called: no sample is left
    raise AssertionError("every sample of this run is already answered")


def summary_from_dict(entry: Mapping[str, Any]) -> RunSummary:
    """A `RunSummary` from a results.json entry (entries of older gprune versions lack the newer fields)."""
    names = {f.name for f in fields(RunSummary)}
    return RunSummary(**{k: v for k, v in entry.items() if k in names})


def read_results(out_dir: str | Path) -> list[RunSummary]:
    """The runs recorded in `out_dir`/results.json (empty when there is none)."""
    path = Path(out_dir) / RESULTS_FILE
    if not path.exists():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        return [summary_from_dict(e) for e in entries]
    except (ValueError, TypeError, AttributeError) as err:
        raise UserError(
            f"{path} is not a results file gprune can read ({err}); move it away, or use --fresh (the answers "
            "in runs/ are kept unless --fresh) or another --out"
        ) from None


def _entry_id(s: RunSummary) -> tuple[Any, ...]:
    # Results of one key over different sample sets are different entries; legacy entries have no key.
    return (s.key_id, s.sample_set) if s.key_id else ("legacy", s.task, s.method, s.keep, s.results_file)


def merge_results(out_dir: str | Path, summaries: Sequence[RunSummary]) -> list[RunSummary]:
    """Earlier runs in `out_dir` plus `summaries`: a new entry replaces only one with the same key and sample
    set, so a call with one model never drops the runs of another."""
    merged = {_entry_id(s): s for s in read_results(out_dir)}
    for s in summaries:
        merged[_entry_id(s)] = s
    return list(merged.values())


def clear_outputs(out_dir: str | Path) -> list[Path]:
    """Delete what `gprune eval` wrote into `out_dir` (answers, results, table, plot); returns the paths.

    Other files in the folder are left alone.
    """
    out = Path(out_dir)
    gone = sorted((out / RUNS_DIR).glob("*.jsonl")) if (out / RUNS_DIR).is_dir() else []
    gone += [p for p in (out / RESULTS_FILE, out / TABLE_FILE, out / PLOT_FILE) if p.is_file()]
    for path in gone:
        path.unlink()
    if (out / RUNS_DIR).is_dir() and not any((out / RUNS_DIR).iterdir()):
        (out / RUNS_DIR).rmdir()
    return gone


def write_outputs(summaries: Sequence[RunSummary], out_dir: Path, *, plot: bool = True) -> dict[str, Path]:
    """results.json, comparison.md and (if matplotlib is available) accuracy_vs_flops.png of `summaries`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"results": out_dir / RESULTS_FILE, "table": out_dir / TABLE_FILE}
    written["results"].write_text(json.dumps([s.to_dict() for s in summaries], indent=2) + "\n")
    written["table"].write_text(comparison_table(summaries) + "\n")
    if plot:
        figure = plot_accuracy_vs_flops(summaries, out_dir / PLOT_FILE)
        if figure is not None:
            written["plot"] = figure
    return written
