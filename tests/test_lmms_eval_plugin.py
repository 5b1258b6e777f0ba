"""The lmms-eval model ``gprune`` on a tiny LLaVA-1.5 (skipped where lmms-eval is not installed).

lmms-eval's requirements pull torchvision, which must not enter the CPU dev environment; run this with
a separate environment that has ``pip install --no-deps lmms-eval==0.7.3`` (docs/evaluation.md).
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

lmms_eval = pytest.importorskip("lmms_eval")

from lmms_eval.api.instance import Instance  # noqa: E402
from lmms_eval.models import get_model  # noqa: E402

from gprune.testing.llava import tiny_llava  # noqa: E402

TASK, SPLIT = "toy", "test"
DOCS = {0: {"q": "What colour?", "img": (250, 0, 0)}, 1: {"q": "Is it round?", "img": (0, 0, 250)}}


def _visual(doc):
    return [Image.new("RGB", (40, 56), doc["img"])]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_llava_lmms")
    tiny = tiny_llava(seed=5)
    tiny.model.save_pretrained(folder)
    tiny.processor.save_pretrained(folder)
    return folder


def _model(checkpoint, **args):
    cls = get_model("gprune")  # resolved through the lmms_eval.models entry point
    model = cls.create_from_arg_string(",".join(f"{k}={v}" for k, v in {"pretrained": checkpoint, **args}.items()))
    model.task_dict = {TASK: {SPLIT: DOCS}}
    return model


def _generate_requests():
    return [
        Instance("generate_until", (doc["q"], {"until": ["\n\n"], "max_new_tokens": 5}, _visual, i, TASK, SPLIT), i,
                 {"task": TASK, "doc_id": i, "repeats": 1})
        for i, doc in DOCS.items()
    ]


def _reference(checkpoint):
    """Unpruned greedy answers straight from transformers, with the plugin's fallback prompt."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(checkpoint)
    model = AutoModelForImageTextToText.from_pretrained(checkpoint).eval()
    answers = []
    for doc in DOCS.values():
        inputs = processor(images=_visual(doc), text=[f"USER: <image>\n{doc['q']} ASSISTANT:"], return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
        text = processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        answers.append(text.split("\n\n")[0].strip())
    return answers


def test_the_model_id_resolves_to_the_plugin_class():
    from gprune.lmms_eval_plugin import GPruneLMM

    assert get_model("gprune") is GPruneLMM


def test_generate_until_unpruned_matches_transformers(checkpoint):
    model = _model(checkpoint, method="none", device="cpu")
    assert model.generate_until(_generate_requests()) == _reference(checkpoint)


def test_generate_until_prunes_and_keep_all_changes_nothing(checkpoint):
    reference = _reference(checkpoint)
    full = _model(checkpoint, method="gprune", keep_ratio=1.0, device="cpu")
    assert full.generate_until(_generate_requests()) == reference
    pruned = _model(checkpoint, method="divprune", keep_tokens=4, positions="compact", device="cpu")
    answers = pruned.generate_until(_generate_requests())
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert pruned.visual_tokens == {"before": 32, "after": 8, "calls": 2}  # 16 -> 4 tokens per image


def test_loglikelihood_under_pruning(checkpoint):
    requests = [
        Instance("loglikelihood", (doc["q"], " red", _visual, i, TASK, SPLIT), i,
                 {"task": TASK, "doc_id": i, "repeats": 1})
        for i, doc in DOCS.items()
    ]
    unpruned = _model(checkpoint, method="none", device="cpu").loglikelihood(requests)
    full = _model(checkpoint, method="gprune", keep_ratio=1.0, device="cpu").loglikelihood(requests)
    pruned = _model(checkpoint, method="gprune", keep_ratio=0.25, device="cpu").loglikelihood(requests)
    for (a, ga), (b, gb), (c, _) in zip(unpruned, full, pruned, strict=True):
        assert a < 0 and a == pytest.approx(b, abs=1e-4) and ga == gb
        assert c < 0 and c != pytest.approx(a, abs=1e-6)  # pruning changes what the model sees


def test_bad_model_args_fail_clearly(checkpoint):
    with pytest.raises(ValueError, match="keep_ratio or keep_tokens"):
        _model(checkpoint, keep_ratio=0.5, keep_tokens=64, device="cpu")
    with pytest.raises(ValueError, match="unknown gprune model_args"):
        _model(checkpoint, keep=0.5, device="cpu")
