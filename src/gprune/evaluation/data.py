"""Local evaluation datasets: one JSONL line per question.

Line format (keys other than these are ignored)::

    {"id": "q17", "image": "images/17.jpg", "question": "What colour is the bus?", "answers": ["red", ...]}

- ``id``: unique per line (string or int); defaults to the line number. Resuming a run relies on it.
- ``image``: path to the image, relative to ``image_root`` (default: the JSONL file's folder).
- ``question``: the question, without the task's answer-format suffix (the runner adds it).
- ``answers``: list of ground-truth answers (VQAv2 / TextVQA: usually ten) or ``answer``: one string
  (GQA, POPE, MME: exactly one, "yes"/"no" for POPE and MME).
- MME only: ``category`` (default "all") and ``pair`` (the two questions about one image share it;
  default: the image path).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gprune.errors import UserError


@dataclass(frozen=True)
class Sample:
    """One question about one image."""

    id: str
    image: Path
    question: str
    answers: tuple[str, ...]
    category: str = "all"
    pair: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def _answers(record: dict[str, Any], where: str) -> tuple[str, ...]:
    if "answers" in record:
        answers = record["answers"]
        if isinstance(answers, str) or not isinstance(answers, list) or not answers:
            raise UserError(f"{where}: 'answers' must be a non-empty list of strings, got {answers!r}")
        # VQAv2 exports often carry {"answer": ...} dicts; accept them.
        answers = [a["answer"] if isinstance(a, dict) and "answer" in a else a for a in answers]
    elif "answer" in record:
        answers = [record["answer"]]
    else:
        raise UserError(f"{where}: needs 'answers' (a list) or 'answer' (a string)")
    if not all(isinstance(a, str) for a in answers):
        raise UserError(f"{where}: every answer must be a string, got {answers!r}")
    return tuple(answers)


def load_samples(path: str | Path, *, image_root: str | Path | None = None, limit: int | None = None) -> list[Sample]:
    """Read and check a JSONL dataset; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"dataset file not found: {path}")
    root = Path(image_root) if image_root is not None else path.parent
    samples: list[Sample] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{where}: not valid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise UserError(f"{where}: each line must be a JSON object")
            for key in ("image", "question"):
                if not isinstance(record.get(key), str) or not record[key]:
                    raise UserError(f"{where}: missing or empty '{key}'")
            sample_id = str(record.get("id", number))
            if sample_id in seen:
                raise UserError(f"{where}: duplicate id {sample_id!r}; ids must be unique to resume runs")
            seen.add(sample_id)
            image = root / record["image"]
            if not image.is_file():
                raise UserError(f"{where}: image not found: {image}")
            samples.append(
                Sample(
                    id=sample_id,
                    image=image,
                    question=record["question"],
                    answers=_answers(record, where),
                    category=str(record.get("category", "all")),
                    pair=str(record.get("pair", record["image"])),
                    extra={k: v for k, v in record.items() if k not in Sample.__dataclass_fields__},
                )
            )
            if limit is not None and len(samples) >= limit:
                break
    if not samples:
        raise UserError(f"{path}: no samples")
    return samples
