"""Benchmarks the runner knows: the prompt each uses and how answers are scored and aggregated.

Prompts follow lmms-eval's defaults for LLaVA-style models: the question plus "\\nAnswer the question
using a single word or phrase." (TextVQA capitalises the question; MME swaps its built-in "Please answer
yes or no." for the same suffix).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gprune.evaluation.data import Sample
from gprune.metrics import MmeItem, exact_match, mme_correct, mme_scores, pope_correct, pope_metrics, vqa_accuracy

SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
_MME_BUILT_IN = " Please answer yes or no."


@dataclass(frozen=True)
class Task:
    """A benchmark: its prompt, the per-sample score, and the run-level metrics from per-sample records.

    `aggregate` gets the stored per-sample records (dicts with "score", "prediction", "label", "category",
    "pair") and returns metrics; "accuracy" (a fraction in [0, 1]) is the headline number.
    """

    name: str
    prompt: Callable[[Sample], str]
    score: Callable[[str, Sample], float]
    aggregate: Callable[[Sequence[dict[str, Any]]], dict[str, Any]]
    single_answer: bool


def _mean_score(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"accuracy": sum(r["score"] for r in records) / len(records)}


def _pope(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return pope_metrics([r["prediction"] for r in records], [r["label"] for r in records])


def _mme(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    scores = mme_scores(MmeItem(r["category"], r["pair"], r["score"]) for r in records)
    return {"accuracy": scores["acc"], **scores}


def _mme_prompt(sample: Sample) -> str:
    return sample.question.strip().replace(_MME_BUILT_IN, "") + SHORT_ANSWER


TASKS: dict[str, Task] = {
    "vqav2": Task(
        "vqav2",
        lambda s: s.question + SHORT_ANSWER,
        lambda p, s: vqa_accuracy(p, s.answers, protocol="vqav2"),
        _mean_score,
        single_answer=False,
    ),
    "textvqa": Task(
        "textvqa",
        lambda s: s.question.capitalize() + SHORT_ANSWER,
        lambda p, s: vqa_accuracy(p, s.answers, protocol="textvqa"),
        _mean_score,
        single_answer=False,
    ),
    "gqa": Task(
        "gqa", lambda s: s.question + SHORT_ANSWER, lambda p, s: exact_match(p, s.answers[0]), _mean_score, True
    ),
    "pope": Task(
        "pope", lambda s: s.question.strip() + SHORT_ANSWER, lambda p, s: pope_correct(p, s.answers[0]), _pope, True
    ),
    "mme": Task("mme", _mme_prompt, lambda p, s: mme_correct(p, s.answers[0]), _mme, True),
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(sorted(TASKS))}") from None


def check_samples(task: Task, samples: Sequence[Sample]) -> None:
    """Fail before any model call when the data cannot be scored by `task`."""
    for s in samples:
        if task.single_answer and len(s.answers) != 1:
            raise ValueError(f"{task.name}: sample {s.id!r} needs exactly one answer, got {len(s.answers)}")
        label = s.answers[0].lower().strip()
        if task.name == "mme":
            label = label.replace(".", "")  # MME's parser drops periods from labels too
        if task.name in ("pope", "mme") and label not in ("yes", "no"):
            raise ValueError(f"{task.name}: sample {s.id!r} answer must be yes or no, got {s.answers[0]!r}")
    if task.name == "mme":
        sizes = Counter((s.category, s.pair) for s in samples)
        odd = [f"{c}/{p}" for (c, p), n in sizes.items() if n != 2]
        if odd:
            raise ValueError(f"mme: each image needs exactly two questions; these do not: {odd[:5]}")
