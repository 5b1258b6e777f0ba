"""Offline evaluation: local JSONL datasets, resumable runs, method x keep sweeps, tables and plots."""

from gprune.evaluation.data import Sample, load_samples
from gprune.evaluation.runner import Answer, Answerer, RunSummary, run_task
from gprune.evaluation.sweep import UNPRUNED, plan_runs, sweep, write_outputs
from gprune.evaluation.tasks import TASKS, Task, get_task

__all__ = [
    "TASKS",
    "UNPRUNED",
    "Answer",
    "Answerer",
    "RunSummary",
    "Sample",
    "Task",
    "get_task",
    "load_samples",
    "plan_runs",
    "run_task",
    "sweep",
    "write_outputs",
]
