"""What produced an evaluation answer: run keys, their ids, and a sentence saying how two keys differ.

A stored answer is only as good as the settings behind it. Resuming reused every answer in an output folder
whatever model made it, so a second model reported the first one's answers. Every run now carries a *key*:
a JSON object of everything that can change an answer (gprune version, task, model fingerprint, dataset
hash, generation settings, the full pruning config). Answers are stored per key (the key id is in the file
name) and reused only under the same key; results of other keys are kept next to them, labelled.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gprune.evaluation.data import Sample

KEY_ID_LENGTH = 10

# Key sections, in the order `describe_difference` names them.
_SECTION_NAMES = {
    "task": "task",
    "model": "model",
    "dataset": "dataset",
    "generation": "generation settings",
    "pruning": "pruning settings",
    "gprune": "gprune version",
}


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal values give equal text, so equal hashes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def digest(value: Any, length: int = 64) -> str:
    """sha256 (hex, first `length` characters) of a value's canonical JSON (bytes are hashed as they are)."""
    data = value if isinstance(value, bytes) else canonical_json(value).encode("utf-8")
    return hashlib.sha256(data).hexdigest()[:length]


def key_id(key: Mapping[str, Any]) -> str:
    """The short id of a run key; it names the run's answers file."""
    return digest(dict(key), KEY_ID_LENGTH)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (streamed)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def dataset_identity(path: str | Path) -> dict[str, Any]:
    """A JSONL dataset by content: its file name (for reading) and the sha256 of its bytes (for matching).

    The whole file is hashed, not the `--limit` prefix, so a rerun with a larger limit resumes the answers
    of a smaller one.
    """
    path = Path(path)
    return {"name": path.name, "sha256": file_sha256(path)}


def _sample_content(sample: Sample) -> dict[str, Any]:
    try:
        image_bytes = sample.image.stat().st_size
    except OSError:
        image_bytes = None
    return {
        "id": sample.id,
        "image": sample.image.name,
        "image_bytes": image_bytes,
        "question": sample.question,
        "answers": list(sample.answers),
        "category": sample.category,
        "pair": sample.pair,
    }


def sample_fingerprint(sample: Sample) -> str:
    """Short hash of one question (text, answers, image name and size): a stored answer is reused only
    for the same question, even when ids are reused by another dataset or images were replaced."""
    return digest(_sample_content(sample), 16)


def samples_identity(samples: Sequence[Sample]) -> dict[str, Any]:
    """The dataset part of a key when no file is known (Python API): a hash of all the samples' content."""
    return {"name": None, "sha256": digest([_sample_content(s) for s in samples])}


def sample_set_id(ids: Iterable[str]) -> str:
    """Short hash of a set of sample ids: results over different subsets (`--limit`) are different entries."""
    return digest(sorted(ids), KEY_ID_LENGTH)


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    return {prefix: value}


def _short(value: Any, limit: int = 40) -> str:
    text = value if isinstance(value, str) else canonical_json(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_difference(found: Mapping[str, Any], wanted: Mapping[str, Any], *, limit: int = 4) -> str:
    """One phrase naming what differs between two keys, e.g. "model (model.fingerprint: 3fa9… vs 81c0…)"."""
    a, b = _leaves(dict(found)), _leaves(dict(wanted))
    changed = [k for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]
    if not changed:
        return "nothing"
    sections = []
    for k in changed:
        section = _SECTION_NAMES.get(k.split(".")[0], k.split(".")[0])
        if section not in sections:
            sections.append(section)
    details = [f"{k}: {_short(a.get(k, '<absent>'))} vs {_short(b.get(k, '<absent>'))}" for k in changed[:limit]]
    more = f"; {len(changed) - limit} more" if len(changed) > limit else ""
    return f"{', '.join(sections)} ({'; '.join(details)}{more})"
