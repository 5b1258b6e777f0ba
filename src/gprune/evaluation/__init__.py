"""Offline evaluation: local JSONL datasets, resumable runs, method x keep sweeps, tables and plots."""

from gprune.evaluation.data import Sample, load_samples
from gprune.evaluation.runner import Answer, Answerer, NothingEvaluatedError, RunSummary, run_task
from gprune.evaluation.sweep import (
    UNPRUNED,
    clear_outputs,
    merge_results,
    plan_runs,
    read_results,
    run_key,
    sweep,
    write_outputs,
)
from gprune.evaluation.tasks import TASKS, Task, get_task

__all__ = [
    "TASKS",
    "UNPRUNED",
    "Answer",
    "Answerer",
    "NothingEvaluatedError",
    "RunSummary",
    "Sample",
    "Task",
    "clear_outputs",
    "get_task",
    "load_samples",
    "merge_results",
    "plan_runs",
    "read_results",
    "run_key",
    "run_task",
    "sweep",
    "write_outputs",
]
