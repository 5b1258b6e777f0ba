"""Run one (method, keep) setting over a dataset, resumably.

The model side is one function, an `Answerer`: ``answer(image_path, prompt) -> Answer``. Everything else
(prompts, scoring, progress, storage, timing) lives here, so the runner is tested with a fake answerer
and the real model path (`gprune.evaluation.hf`) stays small.

Storage: one JSONL file per run. Its first line is a header naming the task, method and keep; each later
line is one answered sample, appended and flushed as soon as it is scored. A rerun reads the file, skips
every sample already there, drops a torn last line (a write cut off by a kill), and goes on; an
interrupted run loses at most the sample in flight.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gprune.evaluation.data import Sample
from gprune.evaluation.tasks import Task, check_samples


@dataclass(frozen=True)
class Answer:
    """What the model side returns for one question.

    text: the generated answer. visual_tokens: visual tokens that entered the LLM (after pruning).
    visual_tokens_before: visual tokens before pruning. prefill_tokens: all tokens of the pruned prompt.
    flops: LLM prefill FLOPs of this prompt (None when unknown).
    """

    text: str
    visual_tokens: int
    visual_tokens_before: int | None = None
    prefill_tokens: int | None = None
    flops: float | None = None


Answerer = Callable[[Path, str], Answer]


@dataclass(frozen=True)
class RunSummary:
    """Run-level results: the headline accuracy, the task's other metrics and per-sample means."""

    task: str
    method: str
    keep: float | int | None
    samples: int
    accuracy: float
    metrics: dict[str, Any]
    visual_tokens: float
    visual_tokens_before: float | None
    flops: float | None
    latency_s: float
    results_file: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_results(path: Path, header: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Records already in `path` (by sample id); drops a torn last line; checks the header matches."""
    if not path.exists():
        return {}
    raw = path.read_bytes()
    good_end = raw.rfind(b"\n") + 1  # everything after the last newline is a torn write
    if good_end < len(raw):
        with path.open("r+b") as f:
            f.truncate(good_end)
    lines = raw[:good_end].decode("utf-8").splitlines()
    if not lines:
        return {}
    found = json.loads(lines[0]).get("header")
    if found != header:
        raise ValueError(
            f"{path} holds results of another run ({found}), not {header}; use a different output folder"
        )
    records: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(lines[1:], start=2):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{path}:{number} is not valid JSON; fix or delete the line to resume") from None
        records[record["id"]] = record
    return records


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known and len(known) == len(values) else None


def run_task(
    samples: Sequence[Sample],
    task: Task,
    answer: Answerer,
    results_file: str | Path,
    *,
    method: str,
    keep: float | int | None,
    progress: bool = True,
) -> RunSummary:
    """Answer and score every sample not yet in `results_file`, then summarise the whole file."""
    check_samples(task, samples)
    path = Path(results_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"task": task.name, "method": method, "keep": keep}
    done = _read_results(path, header)
    todo = [s for s in samples if s.id not in done]
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm
        except ImportError:  # the optional "eval" extra; run without a bar
            tqdm = None
    if progress and tqdm is not None:
        bar = tqdm(total=len(samples), initial=len(samples) - len(todo), desc=f"{method} keep={keep}", unit="q")
    try:
        with path.open("a", encoding="utf-8") as out:
            if out.tell() == 0:
                out.write(json.dumps({"header": header}) + "\n")
            for sample in todo:
                prompt = task.prompt(sample)
                start = time.perf_counter()
                result = answer(sample.image, prompt)
                latency = time.perf_counter() - start
                record = {
                    "id": sample.id,
                    "prediction": result.text,
                    "score": task.score(result.text, sample),
                    "label": sample.answers[0],
                    "category": sample.category,
                    "pair": sample.pair,
                    "visual_tokens": result.visual_tokens,
                    "visual_tokens_before": result.visual_tokens_before,
                    "prefill_tokens": result.prefill_tokens,
                    "flops": result.flops,
                    "latency_s": latency,
                }
                out.write(json.dumps(record) + "\n")
                out.flush()
                os.fsync(out.fileno())
                done[sample.id] = record
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    wanted = {s.id for s in samples}
    records = [r for sid, r in done.items() if sid in wanted]
    metrics = task.aggregate(records)
    return RunSummary(
        task=task.name,
        method=method,
        keep=keep,
        samples=len(records),
        accuracy=float(metrics["accuracy"]),
        metrics=metrics,
        visual_tokens=sum(r["visual_tokens"] for r in records) / len(records),
        visual_tokens_before=_mean([r["visual_tokens_before"] for r in records]),
        flops=_mean([r["flops"] for r in records]),
        latency_s=sum(r["latency_s"] for r in records) / len(records),
        results_file=str(path),
    )
