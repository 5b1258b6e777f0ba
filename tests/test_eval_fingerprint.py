"""The model part of an eval run key: the same checkpoint anywhere matches, another checkpoint does not."""

from __future__ import annotations

import shutil

import pytest
import torch

from gprune.evaluation import progress
from gprune.evaluation.hf import hf_answerer_factory, model_fingerprint
from gprune.testing.llava import tiny_llava


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fp") / "a"
    tiny = tiny_llava(seed=3)
    tiny.model.save_pretrained(folder)
    tiny.processor.save_pretrained(folder)
    copy = folder.parent / "copy_elsewhere"
    shutil.copytree(folder, copy)
    return folder, copy


def _load(path, dtype=torch.float32):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    return AutoModelForImageTextToText.from_pretrained(path, dtype=dtype).eval(), AutoProcessor.from_pretrained(path)


def test_same_checkpoint_in_another_folder_has_the_same_fingerprint(saved):
    a, b = (model_fingerprint(*_load(p)) for p in saved)
    assert a == b and len(a["fingerprint"]) == 16


def test_other_weights_dtype_or_processor_change_the_fingerprint(saved):
    base = model_fingerprint(*_load(saved[0]))
    other = tiny_llava(seed=4)  # same architecture and config, other weights
    assert model_fingerprint(other.model, other.processor)["fingerprint"] != base["fingerprint"]
    assert model_fingerprint(*_load(saved[0], torch.float16))["fingerprint"] != base["fingerprint"]
    model, processor = _load(saved[0])
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1.0  # one changed value among the sampled ones
    assert model_fingerprint(model, processor)["fingerprint"] != base["fingerprint"]
    model, processor = _load(saved[0])
    processor.chat_template = "{{ messages }}"
    assert model_fingerprint(model, processor)["fingerprint"] != base["fingerprint"]


def test_the_factory_carries_its_provenance(saved):
    model, processor = _load(saved[0])
    factory = hf_answerer_factory(model, processor, max_new_tokens=3, name="tiny")
    assert factory.provenance["label"] == {"model": "tiny"}
    assert factory.provenance["generation"]["max_new_tokens"] == 3
    assert factory.provenance["model"] == model_fingerprint(model, processor)


def test_progress_bar_only_on_a_terminal(monkeypatch):
    pytest.importorskip("tqdm")
    assert isinstance(progress.progress_bar(3), progress.NoBar)  # pytest's stderr is no terminal
    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: True)
    bar = progress.progress_bar(3, desc="eval")
    try:
        assert bar.total == 3 and not isinstance(bar, progress.NoBar)
    finally:
        bar.close()
    assert isinstance(progress.progress_bar(3, enabled=False), progress.NoBar)
