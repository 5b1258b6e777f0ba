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
    from gprune.integrations.lmms_eval import GPruneLMM

    assert get_model("gprune") is GPruneLMM


def test_generate_until_unpruned_matches_transformers(checkpoint):
    model = _model(checkpoint, method="none", device="cpu")
    assert model.generate_until(_generate_requests()) == _reference(checkpoint)


def test_generate_until_prunes_and_keep_all_changes_nothing(checkpoint):
    reference = _reference(checkpoint)
    full = _model(checkpoint, method="gprune", keep=1.0, device="cpu")
    assert full.generate_until(_generate_requests()) == reference
    pruned = _model(checkpoint, method="divprune", keep=4, positions="compact", device="cpu")
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
    full = _model(checkpoint, method="gprune", keep=1.0, device="cpu").loglikelihood(requests)
    pruned = _model(checkpoint, method="gprune", keep=0.25, device="cpu").loglikelihood(requests)
    for (a, ga), (b, gb), (c, _) in zip(unpruned, full, pruned, strict=True):
        assert a < 0 and a == pytest.approx(b, abs=1e-4) and ga == gb
        assert c < 0 and c != pytest.approx(a, abs=1e-6)  # pruning changes what the model sees


def test_bad_model_args_fail_clearly(checkpoint):
    with pytest.raises(ValueError, match="give one of keep / keep_ratio / keep_tokens"):
        _model(checkpoint, keep=0.5, keep_tokens=64, device="cpu")
    with pytest.raises(ValueError, match="unknown gprune model_args: 'kep' \\(did you mean 'keep'\\?\\)"):
        _model(checkpoint, kep=0.5, device="cpu")
    with pytest.raises(ValueError, match="keep 1 is ambiguous"):
        _model(checkpoint, keep=1, device="cpu")


def test_old_keep_spellings_still_work_with_a_deprecation_message(checkpoint, capsys):
    model = _model(checkpoint, keep_ratio=0.25, device="cpu")
    assert model.gprune_config.keep == 0.25
    assert "keep_ratio= is deprecated" in capsys.readouterr().err
    assert _model(checkpoint, keep_tokens=4, device="cpu").gprune_config.keep == 4


TOY_TASK = """task: gprune_toy
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function toy_utils.doc_to_visual
doc_to_text: !function toy_utils.doc_to_text
doc_to_target: "answer"
generation_kwargs:
  until: ["\\n\\n"]
  max_new_tokens: 5
  temperature: 0
  do_sample: false
process_results: !function toy_utils.process_results
metric_list:
  - metric: toy_match
    aggregation: mean
    higher_is_better: true
"""
TOY_UTILS = '''from PIL import Image


def doc_to_visual(doc):
    return [Image.new("RGB", (40, 56), tuple(doc["rgb"]))]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["q"]


def process_results(doc, results):
    return {"toy_match": float(results[0] == doc["answer"])}
'''


def _toy_task(checkpoint, tmp_path, data_file: str | None = None) -> None:
    """The toy task in `tmp_path`: the two docs twice (4 docs), answers = transformers' unpruned ones."""
    import json

    data = tmp_path / "toy.jsonl"
    pairs = zip(DOCS.values(), _reference(checkpoint), strict=True)
    rows = [{"q": doc["q"], "rgb": list(doc["img"]), "answer": a} for doc, a in pairs]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows * 2))
    (tmp_path / "toy.yaml").write_text(TOY_TASK.format(data=data_file or data))
    (tmp_path / "toy_utils.py").write_text(TOY_UTILS)


def _cli_args(checkpoint, tmp_path) -> list[str]:
    return [
        "--model", "gprune", "--model_args", f"pretrained={checkpoint},method=gprune,keep=1.0,device=cpu",
        "--tasks", "gprune_toy", "--include_path", str(tmp_path), "--batch_size", "1",
        "--output_path", str(tmp_path / "out"), "--log_samples",
    ]


def test_lmms_eval_cli_under_accelerate_with_two_processes(checkpoint, tmp_path):
    """`accelerate launch --num_processes 2 -m lmms_eval --model gprune ...` end to end (CPU, gloo)."""
    import json
    import subprocess
    import sys

    pytest.importorskip("datasets")
    pytest.importorskip("pytablewriter")
    _toy_task(checkpoint, tmp_path)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu", "-m", "lmms_eval"]
    done = subprocess.run(
        launch + _cli_args(checkpoint, tmp_path), capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "gprune: " not in done.stderr  # the exit guard stays silent when the run evaluated its requests
    out = tmp_path / "out"
    samples = [json.loads(line) for f in out.rglob("*samples_gprune_toy.jsonl") for line in f.read_text().splitlines()]
    assert len(samples) == 4
    # keep 1.0 through the pruning path reproduces transformers' unpruned answers in every process
    assert all(s["toy_match"] == 1.0 for s in samples), [s["filtered_resps"] for s in samples]


# lmms-eval's CLI logs these failures and exits 0 having evaluated nothing; the gprune model makes it exit 1.
# filelock >= 4.3 has no filelock._api: load all of filelock (it loads lazily), then make that import fail.
HIDE_FILELOCK_API = (
    "import sys, filelock; [getattr(filelock, n) for n in filelock.__all__]; sys.modules['filelock._api'] = None; "
)


@pytest.mark.parametrize(
    ("prelude", "data_file", "message"),
    [
        (HIDE_FILELOCK_API, None, 'the gprune model failed: ImportError: lmms-eval 0.7.3 imports filelock._api, '
                                  'which filelock 4.3 removed: pip install "filelock<4.3"'),
        ("", "missing.jsonl", "lmms-eval built the gprune model but evaluated no request"),
    ],
    ids=["filelock-4.3", "no-dataset"],
)
def test_lmms_eval_cli_that_evaluates_nothing_exits_non_zero(checkpoint, tmp_path, prelude, data_file, message):
    import subprocess
    import sys

    pytest.importorskip("datasets")
    pytest.importorskip("pytablewriter")
    _toy_task(checkpoint, tmp_path, data_file=str(tmp_path / data_file) if data_file else None)
    run = prelude + "from lmms_eval.__main__ import cli_evaluate; cli_evaluate()"  # what `lmms-eval` runs
    command = [sys.executable, "-c", run, *_cli_args(checkpoint, tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 1, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("gprune: ") and message in last, done.stderr[-3000:]
    assert not list((tmp_path / "out").rglob("*samples_gprune_toy.jsonl"))


def test_the_exit_guard_judges_a_run_only_under_the_lmms_eval_cli(checkpoint, monkeypatch):
    from gprune.integrations.lmms_eval import _GUARD, _ExitGuard

    _model(checkpoint, method="none", device="cpu")
    assert not _GUARD.armed  # built under pytest, not lmms-eval's CLI: no exit handler
    guard = _ExitGuard()
    monkeypatch.setattr("sys.argv", ["lmms-eval", "--model", "gprune"])
    monkeypatch.setenv("RANK", "0")
    assert "evaluated no request" in guard.failure()
    monkeypatch.setenv("RANK", "1")  # ranks past the documents get no request
    assert guard.failure() is None
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr("sys.argv", ["lmms-eval", "--model", "gprune", "--use_cache", "cache/"])
    assert guard.failure() is None  # every answer may come from the response cache
    guard.answered = 3
    with pytest.raises(ValueError), guard.watch():
        raise ValueError("bad\nrequest")
    assert guard.failure() == "the gprune model failed: ValueError: bad request"


def test_the_old_module_path_still_imports_with_a_deprecation_warning():
    import importlib
    import sys

    from gprune.integrations import lmms_eval as plugin

    sys.modules.pop("gprune.lmms_eval_plugin", None)
    with pytest.warns(DeprecationWarning, match="gprune.integrations.lmms_eval"):
        old = importlib.import_module("gprune.lmms_eval_plugin")
    assert old.manifest is plugin.manifest and old.GPruneLMM is plugin.GPruneLMM
