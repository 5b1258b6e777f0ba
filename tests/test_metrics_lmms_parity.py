"""Our metrics against lmms-eval's own task code on many generated cases (skipped without lmms-eval).

Run it in an environment with ``pip install --no-deps lmms-eval==0.7.3`` (docs/evaluation.md): lmms-eval is
the independent formulation here, imported module by module so its task registry (which needs the
`datasets` package) is not loaded.
"""

from __future__ import annotations

import copy
import importlib
import random
import sys
import types

import pytest

lmms_eval = pytest.importorskip("lmms_eval")

from gprune.metrics import mme_answer, pope_metrics, vqa_accuracy  # noqa: E402

WORDS = ["yes", "No", "two", "2", "a dog", "the Dog.", "man's", "isnt", "1,000", "1000", "well - done",
         "hello-world", "3.5", "none", "0", "Ten", "10", "cat?", "red", "Red!", "t-shirt", " yes\n", "it's",
         "Let's", "a/b", "(x)", "U.S.A.", "....", "red,blue", "5 : 3"]


@pytest.fixture(scope="module")
def lmms_tasks():
    saved = sys.modules.get("lmms_eval.tasks")
    package = types.ModuleType("lmms_eval.tasks")
    package.__path__ = [lmms_eval.__path__[0] + "/tasks"]
    sys.modules["lmms_eval.tasks"] = package
    try:
        yield {name: importlib.import_module(f"lmms_eval.tasks.{name}.utils") for name in ("vqav2", "textvqa", "mme",
                                                                                           "pope")}
    finally:
        for name in [m for m in sys.modules if m.startswith("lmms_eval.tasks")]:
            del sys.modules[name]
        if saved is not None:
            sys.modules["lmms_eval.tasks"] = saved


def test_vqa_accuracy_matches_lmms_eval(lmms_tasks):
    rng = random.Random(0)
    for _ in range(3000):
        pred = rng.choice(WORDS) if rng.random() < 0.8 else " ".join(rng.choices(WORDS, k=2))
        k = rng.choice([1, 3, 10, 10, 10])
        answers = [rng.choice(WORDS[:8] if rng.random() < 0.5 else WORDS) for _ in range(k)]
        if rng.random() < 0.3:
            answers = [answers[0]] * k
        doc = {"question_id": 1, "answers": [{"answer": a, "answer_id": i} for i, a in enumerate(answers)]}
        vqav2 = lmms_tasks["vqav2"].vqav2_process_results(copy.deepcopy(doc), [pred])["exact_match"]
        textvqa = lmms_tasks["textvqa"].textvqa_process_results({"question_id": 1, "answers": list(answers)}, [pred])
        assert vqa_accuracy(pred, answers, protocol="vqav2") == pytest.approx(vqav2, abs=1e-12), (pred, answers)
        assert vqa_accuracy(pred, answers, protocol="textvqa") == pytest.approx(textvqa["exact_match"], abs=1e-12)


def test_mme_and_pope_match_lmms_eval(lmms_tasks):
    for text in ["Yes", "no.", "y", "n", "x", "Yes, there is", "Not at all", "I think so", "nope", "N", "yes yes"]:
        assert mme_answer(text) == lmms_tasks["mme"].parse_pred_ans(text)
    rng = random.Random(1)
    preds = [rng.choice(["yes", "no", "Yes", "maybe", " no "]) for _ in range(300)]
    labels = [rng.choice(["yes", "no"]) for _ in range(300)]
    pope = lmms_tasks["pope"]
    records = [pope.pope_process_results({"question_id": i, "answer": g}, [p])["pope_accuracy"]
               for i, (p, g) in enumerate(zip(preds, labels, strict=True))]
    ours = pope_metrics(preds, labels)
    assert ours["accuracy"] == pytest.approx(pope.pope_aggregate_accuracy(records))
    assert ours["precision"] == pytest.approx(pope.pope_aggregate_precision(records))
    assert ours["recall"] == pytest.approx(pope.pope_aggregate_recall(records))
    assert ours["f1"] == pytest.approx(pope.pope_aggregate_f1_score(records))
    assert ours["label_yes_ratio"] == pytest.approx(pope.pope_aggregate_yes_ratio(records))
