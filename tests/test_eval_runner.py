"""The offline evaluation runner with a fake model: datasets, scoring, resuming, sweeps and reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from gprune.errors import UserError
from gprune.evaluation import Answer, get_task, load_samples, plan_runs, run_task, sweep

VQA_LINES = [
    {"id": "a", "image": "img0.png", "question": "how many cats?", "answers": ["2"] * 10},
    {"id": "b", "image": "img1.png", "question": "what colour?", "answers": ["red"] * 3 + ["blue"] * 7},
    {"id": "c", "image": "img0.png", "question": "is it day?", "answers": ["yes"] * 10},
    {"id": "d", "image": "img1.png", "question": "what animal?", "answers": ["dog"] * 10},
]
# The fake model's answers: a -> "Two" (1.0), b -> "red" (3 reds: 0.9), c -> "no" (0), d -> "a dog" (1.0)
FAKE_ANSWERS = {"how many cats?": "Two", "what colour?": "red", "is it day?": "no", "what animal?": "a dog"}
EXPECTED_ACCURACY = (1.0 + 0.9 + 0.0 + 1.0) / 4


def _write_dataset(folder: Path, lines: list[dict], name: str = "data.jsonl") -> Path:
    for i in range(2):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(folder / f"img{i}.png")
    path = folder / name
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


class FakeModel:
    """Answers from a table; counts calls; can be told to die on a given call."""

    def __init__(self, answers: dict[str, str], *, visual_tokens: int = 576, die_on_call: int | None = None):
        self.answers, self.visual_tokens, self.die_on_call, self.calls = answers, visual_tokens, die_on_call, 0

    def __call__(self, image: Path, prompt: str) -> Answer:
        self.calls += 1
        if self.calls == self.die_on_call:
            raise KeyboardInterrupt
        assert image.is_file()
        question = prompt.split("\n")[0]
        text = self.answers.get(question) or self.answers.get(question.lower(), "")
        return Answer(text, self.visual_tokens, 576, self.visual_tokens + 40, 1e9 * (self.visual_tokens + 40))


def test_load_samples_reads_the_documented_format(tmp_path):
    samples = load_samples(_write_dataset(tmp_path, VQA_LINES))
    assert [s.id for s in samples] == ["a", "b", "c", "d"]
    assert samples[1].answers == tuple(["red"] * 3 + ["blue"] * 7)
    assert samples[0].image == tmp_path / "img0.png"
    assert len(load_samples(tmp_path / "data.jsonl", limit=2)) == 2


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"image": "img0.png", "question": "q"}', "needs 'answers'"),
        ('{"image": "missing.png", "question": "q", "answer": "x"}', "image not found"),
        ('{"image": "img0.png", "answer": "x"}', "missing or empty 'question'"),
        ("not json", "not valid JSON"),
        ('{"image": "img0.png", "question": "q", "answers": []}', "non-empty list"),
    ],
)
def test_load_samples_names_the_bad_line(tmp_path, line, message):
    path = _write_dataset(tmp_path, VQA_LINES[:1])
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(UserError, match=rf"data.jsonl:2: .*{message}"):
        load_samples(path)


def test_duplicate_ids_are_rejected(tmp_path):
    with pytest.raises(UserError, match="duplicate id 'a'"):
        load_samples(_write_dataset(tmp_path, [VQA_LINES[0], VQA_LINES[0]]))


def test_run_task_scores_vqav2_like_lmms_eval(tmp_path):
    samples = load_samples(_write_dataset(tmp_path, VQA_LINES))
    model = FakeModel(FAKE_ANSWERS, visual_tokens=192)
    summary = run_task(samples, get_task("vqav2"), model, tmp_path / "run.jsonl", method="gprune", keep=0.33,
                       progress=False)
    assert summary.accuracy == pytest.approx(EXPECTED_ACCURACY)
    assert summary.samples == 4 and model.calls == 4
    assert summary.visual_tokens == 192 and summary.visual_tokens_before == 576
    assert summary.flops == pytest.approx(1e9 * 232)
    assert summary.latency_s >= 0


def test_an_interrupted_run_resumes_without_redoing_or_losing_work(tmp_path):
    samples = load_samples(_write_dataset(tmp_path, VQA_LINES))
    task, results = get_task("vqav2"), tmp_path / "run.jsonl"
    dying = FakeModel(FAKE_ANSWERS, die_on_call=3)
    with pytest.raises(KeyboardInterrupt):
        run_task(samples, task, dying, results, method="gprune", keep=0.5, progress=False)
    lines = results.read_text().splitlines()
    assert len(lines) == 1 + 2  # header + the two answered samples, already on disk
    fresh = FakeModel(FAKE_ANSWERS)
    summary = run_task(samples, task, fresh, results, method="gprune", keep=0.5, progress=False)
    assert fresh.calls == 2  # only c and d
    assert summary.accuracy == pytest.approx(EXPECTED_ACCURACY) and summary.samples == 4
    again = FakeModel(FAKE_ANSWERS)
    run_task(samples, task, again, results, method="gprune", keep=0.5, progress=False)
    assert again.calls == 0  # everything done: nothing is recomputed
    assert [json.loads(x).get("id") for x in results.read_text().splitlines()[1:]] == ["a", "b", "c", "d"]


def test_a_torn_last_line_is_dropped_and_redone(tmp_path):
    samples = load_samples(_write_dataset(tmp_path, VQA_LINES))
    task, results = get_task("vqav2"), tmp_path / "run.jsonl"
    run_task(samples[:2], task, FakeModel(FAKE_ANSWERS), results, method="random", keep=0.5, progress=False)
    with results.open("a") as f:
        f.write('{"id": "c", "predic')  # killed mid-write
    model = FakeModel(FAKE_ANSWERS)
    summary = run_task(samples, task, model, results, method="random", keep=0.5, progress=False)
    assert model.calls == 2 and summary.accuracy == pytest.approx(EXPECTED_ACCURACY)
    assert all(json.loads(x) for x in results.read_text().splitlines())


def test_a_results_file_of_another_run_is_refused(tmp_path):
    samples = load_samples(_write_dataset(tmp_path, VQA_LINES))
    results = tmp_path / "run.jsonl"
    run_task(samples, get_task("vqav2"), FakeModel(FAKE_ANSWERS), results, method="gprune", keep=0.5, progress=False)
    with pytest.raises(ValueError, match="holds results of another run"):
        run_task(samples, get_task("vqav2"), FakeModel(FAKE_ANSWERS), results, method="dart", keep=0.5,
                 progress=False)


def test_pope_and_mme_runs_report_their_metrics(tmp_path):
    pope_lines = [
        {"id": i, "image": "img0.png", "question": q, "answer": a}
        for i, (q, a) in enumerate([("is there a cat?", "yes"), ("is there a dog?", "no"), ("a car?", "yes")])
    ]
    samples = load_samples(_write_dataset(tmp_path, pope_lines, "pope.jsonl"))
    model = FakeModel({"is there a cat?": "Yes", "is there a dog?": "yes", "a car?": "no"})
    s = run_task(samples, get_task("pope"), model, tmp_path / "pope_run.jsonl", method="gprune", keep=0.5,
                 progress=False)
    # tp 1, fp 1, fn 1 -> accuracy 1/3, precision 1/2, recall 1/2, F1 1/2, predicted-yes 2/3
    assert s.accuracy == pytest.approx(1 / 3) and s.metrics["f1"] == pytest.approx(0.5)
    assert s.metrics["yes_ratio"] == pytest.approx(2 / 3)

    mme_lines = [
        {"id": 1, "image": "img0.png", "question": "Is it red? Please answer yes or no.", "answer": "Yes",
         "category": "color"},
        {"id": 2, "image": "img0.png", "question": "Is it blue? Please answer yes or no.", "answer": "No",
         "category": "color"},
        {"id": 3, "image": "img1.png", "question": "Is it a cat? Please answer yes or no.", "answer": "Yes",
         "category": "existence"},
        {"id": 4, "image": "img1.png", "question": "Is it a dog? Please answer yes or no.", "answer": "No",
         "category": "existence"},
    ]
    samples = load_samples(_write_dataset(tmp_path, mme_lines, "mme.jsonl"))
    model = FakeModel({"Is it red?": "Yes.", "Is it blue?": "No", "Is it a cat?": "yes", "Is it a dog?": "yes"})
    s = run_task(samples, get_task("mme"), model, tmp_path / "mme_run.jsonl", method="gprune", keep=0.5,
                 progress=False)
    # color: both right -> 100 + 100 = 200; existence: one right -> 50 + 0 = 50; total 250
    assert s.metrics["categories"] == {"color": 200.0, "existence": 50.0}
    assert s.metrics["total"] == pytest.approx(250.0) and s.accuracy == pytest.approx(3 / 4)


def test_mme_needs_question_pairs(tmp_path):
    lines = [{"id": 1, "image": "img0.png", "question": "Is it red?", "answer": "yes"}]
    samples = load_samples(_write_dataset(tmp_path, lines))
    with pytest.raises(ValueError, match="exactly two questions"):
        run_task(samples, get_task("mme"), FakeModel({}), tmp_path / "r.jsonl", method="gprune", keep=0.5,
                 progress=False)


def test_bad_labels_fail_before_any_model_call(tmp_path):
    lines = [{"id": 1, "image": "img0.png", "question": "Is it red?", "answer": "Yes."}]
    samples = load_samples(_write_dataset(tmp_path, lines))
    model = FakeModel({})
    with pytest.raises(ValueError, match="answer must be yes or no"):
        run_task(samples, get_task("pope"), model, tmp_path / "r.jsonl", method="gprune", keep=0.5, progress=False)
    assert model.calls == 0


def test_plan_runs_runs_the_unpruned_model_once():
    runs = plan_runs(["gprune", "random"], [1.0, 0.5, 64], method_params={"random": {"seed": 3}})
    assert [(m, k) for m, k, _ in runs] == [("none", 1.0), ("gprune", 0.5), ("gprune", 64), ("random", 0.5),
                                            ("random", 64)]
    assert runs[0][2] is None
    assert runs[3][2].method_params == {"seed": 3} and runs[4][2].keep == 64
    with pytest.raises(ValueError, match="method must be one of"):
        plan_runs(["nope"], [0.5])


def test_sweep_writes_results_table_and_plot(tmp_path):
    samples = load_samples(_write_dataset(tmp_path, VQA_LINES))
    built = []

    def make_answerer(config):
        built.append(config)
        kept = 576 if config is None else int(576 * config.keep)
        wrong = {} if config is None else {"what animal?": "cat"} if config.keep < 0.4 else {}
        return FakeModel(FAKE_ANSWERS | wrong, visual_tokens=kept)

    out = tmp_path / "sweep"
    summaries = sweep(samples, get_task("vqav2"), make_answerer, out, methods=["gprune", "random"],
                      keeps=[1.0, 0.5, 0.33], progress=False)
    assert [(s.method, s.keep) for s in summaries] == [("none", 1.0), ("gprune", 0.5), ("gprune", 0.33),
                                                       ("random", 0.5), ("random", 0.33)]
    assert len(built) == 5
    results = json.loads((out / "results.json").read_text())
    assert {"method", "keep", "accuracy", "visual_tokens", "flops", "latency_s"} <= set(results[0])
    assert results[0]["accuracy"] == pytest.approx(EXPECTED_ACCURACY)
    assert results[2]["accuracy"] == pytest.approx((1.0 + 0.9 + 0.0 + 0.0) / 4)
    table = (out / "comparison.md").read_text()
    assert "| gprune | 0.33 | 190.0 | 47.50 | -25.00 |" in table
    assert (out / "accuracy_vs_flops.png").stat().st_size > 1000
    assert len(list((out / "runs").glob("*.jsonl"))) == 5
    # a second sweep resumes everything from disk: no model call at all
    calls = []
    sweep(samples, get_task("vqav2"), lambda c: calls.append(c) or FakeModel({}), out, methods=["gprune", "random"],
          keeps=[1.0, 0.5, 0.33], progress=False)
    assert json.loads((out / "results.json").read_text()) == results
