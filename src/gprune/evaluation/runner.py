"""Run one (method, keep) setting over a dataset, resumably.

The model side is one function, an `Answerer`: ``answer(image_path, prompt) -> Answer``. Everything else
(prompts, scoring, progress, storage, timing) lives here, so the runner is tested with a fake answerer
and the real model path (`gprune.evaluation.hf`) stays small.

Storage: one JSONL file per run. Its first line is a header holding the run's key (everything that
produced the answers: `gprune.evaluation.provenance`); each later line is one answered sample (or the error
it raised), appended and flushed as soon as it is scored. A rerun reads the file, reuses every answer to
the same question, retries errors, drops a torn last line (a write cut off by a kill), and goes on; an
interrupted run loses at most the sample in flight. A file written under another key is refused.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gprune.evaluation.data import Sample
from gprune.evaluation.progress import progress_bar
from gprune.evaluation.provenance import canonical_json, describe_difference, key_id, sample_fingerprint, sample_set_id
from gprune.evaluation.tasks import Task, check_samples
from gprune.validation import Keep


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
    """Run-level results: the headline accuracy, the task's other metrics and per-sample means.

    samples: answered samples (the means are over them); errors: samples whose answer raised in this call
    (retried on the next). key / key_id: what produced the answers; sample_set: hash of the answered ids,
    so results over different subsets stay apart; label: a human description of the key (set by sweeps).
    """

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
    errors: int = 0
    first_error: str | None = None
    key_id: str | None = None
    key: dict[str, Any] | None = None
    sample_set: str | None = None
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class NothingEvaluatedError(RuntimeError):
    """A run (or a whole sweep) answered no sample: there is no result to report, only the reason."""


def run_header(task: str, method: str, keep: Keep | None, key: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The first line of a run's answers file: the run's key, its id, and task/method/keep for reading."""
    if key is None:
        key = {"task": task, "pruning": {"method": method, "keep": keep}}
    plain = json.loads(canonical_json(key))  # as it reads back from the file (tuples become lists)
    return {"key_id": key_id(plain), "task": task, "method": method, "keep": keep, "key": plain}


def read_run_file(path: Path, header: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The records already in `path` (answers and errors, in file order); drops a torn last line.

    Raises `ValueError` naming what differs when the file belongs to another run (another key).
    """
    if not path.exists():
        return []
    raw = path.read_bytes()
    good_end = raw.rfind(b"\n") + 1  # everything after the last newline is a torn write
    if good_end < len(raw):
        with path.open("r+b") as f:
            f.truncate(good_end)
    lines = raw[:good_end].decode("utf-8").splitlines()
    if not lines:
        return []
    found = json.loads(lines[0]).get("header") or {}
    if found.get("key") != header["key"]:
        what = (
            describe_difference(found["key"], header["key"])
            if isinstance(found.get("key"), dict)
            else "it was written by an older gprune that did not record what produced its answers"
        )
        raise ValueError(
            f"{path} holds results of another run; they differ in {what}. Use another output folder, or "
            "--fresh (gprune eval) to delete the old answers"
        )
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise ValueError(f"{path}:{number} is not valid JSON; fix or delete the line to resume") from None
    return records


def reusable_answers(records: Sequence[dict[str, Any]], samples: Sequence[Sample]) -> dict[str, dict[str, Any]]:
    """Stored answers (by sample id) that answer exactly these questions; errors and stale answers are redone.

    An answer is stale when its question changed under the same id (text, answers, image name or size).
    """
    wanted = {s.id: sample_fingerprint(s) for s in samples}
    done: dict[str, dict[str, Any]] = {}
    for record in records:  # a later line for the same id supersedes an earlier one
        sid = record.get("id")
        if sid in wanted and "error" not in record and record.get("sample") == wanted[sid]:
            done[sid] = record
    return done


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known and len(known) == len(values) else None


def _error_text(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip().replace("\n", " ")
    return text if len(text) <= 300 else text[:299] + "…"


def run_task(
    samples: Sequence[Sample],
    task: Task,
    answer: Answerer,
    results_file: str | Path,
    *,
    method: str,
    keep: Keep | None,
    key: Mapping[str, Any] | None = None,
    progress: bool = True,
    bar: Any | None = None,
) -> RunSummary:
    """Answer and score every sample without a stored answer in `results_file`, then summarise them all.

    `key` says what produced the answers (see `gprune.evaluation.provenance`); a file written under another
    key is refused. A sample whose answer raises an exception is recorded as an error and retried on the next
    run; the others go on. `bar` is a shared progress bar (a sweep's); without one, `progress` shows a bar of
    this run. Raises `NothingEvaluatedError` when no sample has an answer.
    """
    check_samples(task, samples)
    path = Path(results_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = run_header(task.name, method, keep, key)
    done = reusable_answers(read_run_file(path, header), samples)
    todo = [s for s in samples if s.id not in done]
    own_bar = bar is None and progress
    if own_bar:
        bar = progress_bar(len(todo), desc=f"{method} keep={keep}")
    errors: list[tuple[str, str]] = []
    try:
        with path.open("a", encoding="utf-8") as out:
            if out.tell() == 0:
                out.write(json.dumps({"header": header}) + "\n")
            for sample in todo:
                fingerprint = sample_fingerprint(sample)
                start = time.perf_counter()
                try:
                    result = answer(sample.image, task.prompt(sample))
                except Exception as err:  # noqa: BLE001 - one bad sample must not end a long sweep
                    errors.append((sample.id, _error_text(err)))
                    record = {"id": sample.id, "sample": fingerprint, "error": errors[-1][1]}
                else:
                    record = {
                        "id": sample.id,
                        "sample": fingerprint,
                        "prediction": result.text,
                        "score": task.score(result.text, sample),
                        "label": sample.answers[0],
                        "category": sample.category,
                        "pair": sample.pair,
                        "visual_tokens": result.visual_tokens,
                        "visual_tokens_before": result.visual_tokens_before,
                        "prefill_tokens": result.prefill_tokens,
                        "flops": result.flops,
                        "latency_s": time.perf_counter() - start,
                    }
                    done[sample.id] = record
                out.write(json.dumps(record) + "\n")
                out.flush()
                os.fsync(out.fileno())
                if bar is not None:
                    bar.update(1)
    finally:
        if own_bar and bar is not None:
            bar.close()
    records = [done[s.id] for s in samples if s.id in done]
    first_error = f"sample {errors[0][0]!r}: {errors[0][1]}" if errors else None
    if not records:
        reason = f"all {len(samples)} samples failed, first {first_error}" if errors else "no samples given"
        raise NothingEvaluatedError(f"{method} keep={keep} evaluated nothing: {reason}")
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
        errors=len(errors),
        first_error=first_error,
        key_id=header["key_id"],
        key=header["key"],
        sample_set=sample_set_id(r["id"] for r in records),
    )
