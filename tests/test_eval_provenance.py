"""Eval results are keyed by what produced them: other models, datasets or settings never reuse answers,
merging keeps earlier runs, and a sweep that evaluated nothing says so (fake models, no transformers)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from gprune.errors import UserError
from gprune.evaluation import (
    Answer,
    NothingEvaluatedError,
    clear_outputs,
    get_task,
    load_samples,
    read_results,
    run_task,
    sweep,
)
from gprune.evaluation.provenance import describe_difference, key_id

LINES = [
    {"id": "a", "image": "img0.png", "question": "is it red?", "answer": "yes"},
    {"id": "b", "image": "img1.png", "question": "is it blue?", "answer": "no"},
    {"id": "c", "image": "img0.png", "question": "is it round?", "answer": "yes"},
]


def _dataset(folder: Path, lines: list[dict] = LINES, name: str = "pope.jsonl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(2):
        Image.new("RGB", (8, 8), (60 * i, 0, 0)).save(folder / f"img{i}.png")
    path = folder / name
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


class Model:
    """A fake model that always answers `text` and reports `tokens` visual tokens; counts its calls."""

    def __init__(self, text: str = "yes", tokens: int = 100, fail: set[str] | None = None):
        self.text, self.tokens, self.fail, self.calls = text, tokens, fail or set(), 0

    def factory(self, config):
        kept = self.tokens if config is None else int(self.tokens * config.keep)

        def answer(image: Path, prompt: str) -> Answer:
            self.calls += 1
            if any(q in prompt for q in self.fail):
                raise OSError(f"cannot read {image.name}")
            return Answer(self.text, kept, self.tokens, kept + 10, 1e9 * (kept + 10))

        return answer


def _provenance(model: str) -> dict:
    return {"model": {"fingerprint": f"fp-{model}"}, "label": {"model": model}}


def _sweep(samples, out, model: Model, name: str, **kw):
    kw = {"methods": ["gprune"], "keeps": [1.0, 0.5], "progress": False, **kw}
    return sweep(samples, get_task("pope"), model.factory, out, provenance=_provenance(name), **kw)


def test_another_model_never_reuses_answers_and_both_stay_in_the_results(tmp_path):
    samples = load_samples(_dataset(tmp_path / "data"))
    out = tmp_path / "out"
    a, b = Model("yes", tokens=100), Model("no", tokens=64)
    _sweep(samples, out, a, "A")
    notes: list[str] = []
    summaries = _sweep(samples, out, b, "B", log=notes.append)
    assert b.calls == 2 * 3  # nothing of model A was reused
    assert {s.visual_tokens for s in summaries} == {64, 32}  # model B's own token counts
    results = read_results(out)
    assert len(results) == 4 and {r.label.split(" · ")[0] for r in results} == {"model A [fp-A]", "model B [fp-B]"}
    assert len(list((out / "runs").glob("*.jsonl"))) == 4
    assert any("differs in model (model.fingerprint: fp-A vs fp-B)" in n for n in notes)
    table = (out / "comparison.md").read_text()
    assert table.count("Task: pope") == 2  # one table per model: Δ only within one model
    assert "model A [fp-A]" in table and "model B [fp-B]" in table
    # each model compared with its own unpruned run: A answers "yes" (2/3 right) at both keeps -> Δ 0
    assert table.count("| gprune | 0.5 |") == 2 and "+0.00" in table
    # rerunning model A resumes A's answers only
    again = Model("yes", tokens=100)
    _sweep(samples, out, again, "A")
    assert again.calls == 0 and len(read_results(out)) == 4


def test_another_dataset_with_the_same_ids_is_not_answered_from_the_old_one(tmp_path):
    first = load_samples(_dataset(tmp_path / "d1"))
    changed = [dict(line, question="is it green?") if line["id"] == "b" else line for line in LINES]
    second = load_samples(_dataset(tmp_path / "d2", changed))
    out = tmp_path / "out"
    _sweep(first, out, Model(), "A")
    model = Model()
    _sweep(second, out, model, "A")
    assert model.calls == 2 * 3  # another dataset hash: another key, every question answered again
    assert len(read_results(out)) == 4


def test_an_answer_is_reused_only_for_the_same_question(tmp_path):
    path = _dataset(tmp_path / "d")
    samples = load_samples(path)
    task, results = get_task("pope"), tmp_path / "run.jsonl"
    run_task(samples, task, Model().factory(None), results, method="none", keep=1.0, progress=False)
    Image.new("RGB", (20, 20), (1, 2, 3)).save(tmp_path / "d" / "img1.png")  # b's image replaced
    model = Model()
    run_task(samples, task, model.factory(None), results, method="none", keep=1.0, progress=False)
    assert model.calls == 1  # only b, whose image changed


def test_merging_never_drops_earlier_runs(tmp_path):
    samples = load_samples(_dataset(tmp_path / "d"))
    out = tmp_path / "out"
    _sweep(samples, out, Model(), "A", methods=["gprune", "random"], keeps=[1.0, 0.5, 0.33])
    assert len(read_results(out)) == 5
    notes: list[str] = []
    _sweep(samples, out, Model(), "A", methods=["divprune"], keeps=[0.5], log=notes.append)
    assert notes == []  # other methods of the same model and dataset: one comparison, nothing to note
    results = read_results(out)
    assert [(r.method, r.keep) for r in results] == [
        ("none", 1.0),
        ("gprune", 0.5),
        ("gprune", 0.33),
        ("random", 0.5),
        ("random", 0.33),
        ("divprune", 0.5),
    ]
    rows = [r for r in (out / "comparison.md").read_text().splitlines() if r.startswith("| ") and "---" not in r]
    assert len(rows) == 1 + 6
    # a smaller sample set is another entry, not a replacement
    _sweep(samples[:2], out, Model(), "A", methods=["divprune"], keeps=[0.5])
    assert sorted(r.samples for r in read_results(out) if r.method == "divprune") == [2, 3]


def test_results_of_an_older_gprune_are_kept_and_labelled(tmp_path):
    samples = load_samples(_dataset(tmp_path / "d"))
    out = tmp_path / "out"
    out.mkdir()
    legacy = {
        "task": "pope",
        "method": "dart",
        "keep": 0.5,
        "samples": 3,
        "accuracy": 0.5,
        "metrics": {},
        "visual_tokens": 50.0,
        "visual_tokens_before": 100.0,
        "flops": None,
        "latency_s": 0.1,
        "results_file": "runs/dart_keep-0.5.jsonl",
    }
    (out / "results.json").write_text(json.dumps([legacy]))
    _sweep(samples, out, Model(), "A")
    assert [r.method for r in read_results(out)] == ["dart", "none", "gprune"]
    assert "runs of an earlier gprune" in (out / "comparison.md").read_text()


def test_a_results_file_of_another_key_is_refused_naming_the_difference(tmp_path):
    samples = load_samples(_dataset(tmp_path / "d"))
    results = tmp_path / "run.jsonl"
    key = {"task": "pope", "model": {"fingerprint": "x"}, "pruning": {"method": "gprune", "keep": 0.5}}
    run_task(
        samples, get_task("pope"), Model().factory(None), results, method="gprune", keep=0.5, key=key, progress=False
    )
    other = {**key, "model": {"fingerprint": "y"}}
    with pytest.raises(ValueError, match=r"differ in model \(model.fingerprint: x vs y\).*--fresh"):
        run_task(
            samples,
            get_task("pope"),
            Model().factory(None),
            results,
            method="gprune",
            keep=0.5,
            key=other,
            progress=False,
        )


def test_describe_difference_and_key_ids():
    a = {"task": "pope", "dataset": {"sha256": "1"}, "pruning": {"method": "gprune", "keep": 0.5}}
    b = {"task": "pope", "dataset": {"sha256": "2"}, "pruning": {"method": "gprune", "keep": 0.33}}
    assert describe_difference(a, b) == "dataset, pruning settings (dataset.sha256: 1 vs 2; pruning.keep: 0.5 vs 0.33)"
    assert describe_difference(a, a) == "nothing"
    assert key_id(a) == key_id(json.loads(json.dumps(a))) and key_id(a) != key_id(b) and len(key_id(a)) == 10


def test_an_empty_sample_list_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="nothing to evaluate"):
        _sweep([], tmp_path / "out", Model(), "A")


def test_every_sample_failing_evaluates_nothing_and_says_why(tmp_path):
    samples = load_samples(_dataset(tmp_path / "d"))
    out = tmp_path / "out"
    model = Model(fail={"red", "blue", "round"})
    with pytest.raises(
        NothingEvaluatedError,
        match=r"all 2 runs evaluated nothing; first: none keep=1.0 evaluated "
        r"nothing: all 3 samples failed, first sample 'a': OSError: cannot read img0.png",
    ):
        _sweep(samples, out, model, "A")
    assert not (out / "results.json").exists()


def test_a_run_that_evaluated_nothing_is_reported_after_writing_the_others(tmp_path):
    samples = load_samples(_dataset(tmp_path / "d"))
    out = tmp_path / "out"

    def factory(config):  # the pruned run fails on every sample, the unpruned one works
        answer = Model().factory(config)
        return answer if config is None else Model(fail={"is it"}).factory(config)

    with pytest.raises(NothingEvaluatedError, match=r"1 of 2 runs evaluated nothing .*first: gprune keep=0.5"):
        sweep(samples, get_task("pope"), factory, out, methods=["gprune"], keeps=[1.0, 0.5], progress=False)
    assert [r.method for r in read_results(out)] == ["none"]


def test_failed_samples_are_counted_reported_and_retried(tmp_path):
    samples = load_samples(_dataset(tmp_path / "d"))
    out = tmp_path / "out"
    summaries = _sweep(samples, out, Model(fail={"blue"}), "A", keeps=[0.5])
    assert summaries[0].samples == 2 and summaries[0].errors == 1
    assert summaries[0].first_error == "sample 'b': OSError: cannot read img1.png"
    assert "| 2 (1 failed) |" in (out / "comparison.md").read_text()
    retry = Model()
    summaries = _sweep(samples, out, retry, "A", keeps=[0.5])
    assert retry.calls == 1 and summaries[0].samples == 3 and summaries[0].errors == 0
    assert len(read_results(out)) == 2  # the 2-sample entry and the complete one


def test_one_progress_bar_covers_every_unanswered_item(tmp_path, monkeypatch):
    samples = load_samples(_dataset(tmp_path / "d"))
    bars = []

    class Bar:
        def __init__(self, total, **kw):
            self.total, self.done, self.kw, self.descriptions = total, 0, kw, []
            bars.append(self)

        def update(self, n=1):
            self.done += n

        def set_description(self, desc=None, refresh=True):
            self.descriptions.append(desc)

        def close(self):
            pass

    # the package's `sweep` function shadows the module of the same name
    monkeypatch.setattr(sys.modules["gprune.evaluation.sweep"], "progress_bar", Bar)
    out = tmp_path / "out"
    # one dataset identity (the CLI's: the file's hash), so the second call resumes the first's answers
    prov = {**_provenance("A"), "dataset": {"sha256": "file"}}
    kw = {"methods": ["gprune", "random"], "keeps": [1.0, 0.5], "progress": True}
    sweep(samples[:1], get_task("pope"), Model().factory, out, provenance=prov, **kw)
    sweep(samples, get_task("pope"), Model().factory, out, provenance=prov, **kw)
    assert len(bars) == 2
    assert (bars[0].total, bars[0].done) == (3, 3)
    assert (bars[1].total, bars[1].done) == (3 * 3 - 3, 6)  # answered items are not counted again
    assert bars[1].descriptions == ["[1/3] none keep=1.0", "[2/3] gprune keep=0.5", "[3/3] random keep=0.5"]


def test_progress_is_quiet_off_a_terminal_but_logs_a_line_per_run(tmp_path, capsys):
    samples = load_samples(_dataset(tmp_path / "d"))
    lines: list[str] = []
    _sweep(samples, tmp_path / "out", Model(), "A", progress=True, log=lines.append)
    assert capsys.readouterr().err == ""  # pytest's stderr is not a terminal: no bar
    assert lines[0].startswith("[1/2] none keep=1.0: accuracy 66.67% over 3 samples")


def test_clear_outputs_removes_only_what_eval_wrote(tmp_path):
    samples = load_samples(_dataset(tmp_path / "d"))
    out = tmp_path / "out"
    _sweep(samples, out, Model(), "A")
    (out / "notes.txt").write_text("mine")
    removed = clear_outputs(out)
    assert len(removed) == 2 + 3  # two answer files, results, table, plot
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
