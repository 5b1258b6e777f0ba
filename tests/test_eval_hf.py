"""`gprune eval` end to end on a tiny random-weight LLaVA-1.5 saved to disk (no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from gprune.cli import main
from gprune.testing.llava import tiny_llava

PROMPT_SUFFIX = "\nAnswer the question using a single word or phrase."
QUESTIONS = ["What is it?", "Which colour?", "Where?"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny_llava")
    tiny = tiny_llava(seed=3)
    tiny.model.save_pretrained(folder)
    tiny.processor.save_pretrained(folder)
    return folder


def _reference_answers(checkpoint: Path, images: list[Path]) -> list[str]:
    """The unpruned model's greedy answers, computed directly with transformers (no gprune)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(checkpoint)
    model = AutoModelForImageTextToText.from_pretrained(checkpoint).eval()
    answers = []
    for question, image in zip(QUESTIONS, images, strict=True):
        text = f"USER: <image>\n{question}{PROMPT_SUFFIX} ASSISTANT:"
        inputs = processor(images=[Image.open(image).convert("RGB")], text=[text], return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        answers.append(processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip())
    return answers


def test_gprune_eval_sweeps_a_tiny_model_and_resumes(checkpoint, tmp_path):
    images = []
    for i, colour in enumerate([(250, 0, 0), (0, 250, 0), (30, 30, 200)]):
        images.append(tmp_path / f"img{i}.png")
        Image.new("RGB", (40, 56), colour).save(images[-1])
    expected = _reference_answers(checkpoint, images)
    data = tmp_path / "gqa.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": i, "image": p.name, "question": q, "answer": a}) + "\n"
            for i, (q, p, a) in enumerate(zip(QUESTIONS, images, expected, strict=True))
        )
    )
    out = tmp_path / "out"
    argv = ["eval", "--model", str(checkpoint), "--data", str(data), "--task", "gqa", "--methods", "gprune,random",
            "--keep", "1.0,0.5", "--out", str(out), "--max-new-tokens", "4", "--no-progress", "--device", "cpu"]
    assert main(argv) == 0
    results = {r["method"]: r for r in json.loads((out / "results.json").read_text())}
    assert set(results) == {"none", "gprune", "random"}
    # the unpruned run reproduces transformers' own answers, so it scores 1.0 against them
    assert results["none"]["accuracy"] == 1.0
    assert results["none"]["visual_tokens"] == 16 and results["gprune"]["visual_tokens"] == 8
    assert results["gprune"]["visual_tokens_before"] == 16
    assert results["gprune"]["flops"] < results["none"]["flops"]
    assert results["random"]["flops"] == results["gprune"]["flops"]  # same token count, same FLOPs
    rows = [line for line in (out / "comparison.md").read_text().splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows] == ["| method", "| none", "| gprune", "| random"]
    assert (out / "accuracy_vs_flops.png").is_file()
    # rerunning the same command answers nothing again
    before = {p.name: p.read_text() for p in (out / "runs").iterdir()}
    assert main(argv) == 0
    assert {p.name: p.read_text() for p in (out / "runs").iterdir()} == before


def _gqa_data(folder: Path, answers: list[str], *, bad_image: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(len(answers)):
        if bad_image:
            (folder / f"img{i}.png").write_bytes(b"not an image")
        else:
            Image.new("RGB", (40, 56), (80 * i, 0, 0)).save(folder / f"img{i}.png")
    data = folder / "gqa.jsonl"
    data.write_text("".join(json.dumps({"id": i, "image": f"img{i}.png", "question": QUESTIONS[i], "answer": a})
                            + "\n" for i, a in enumerate(answers)))
    return data


def _eval_argv(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["eval", "--model", str(model), "--data", str(data), "--task", "gqa", "--methods", "gprune", "--keep",
            "1.0,0.5", "--out", str(out), "--max-new-tokens", "2", "--no-progress", "--device", "cpu", *extra]


def test_a_second_model_in_the_same_out_gets_its_own_answers_and_keeps_the_first(checkpoint, tmp_path, capsys):
    from gprune.testing.llava import tiny_llava_next

    other = tmp_path / "next"
    tiny = tiny_llava_next()
    tiny.model.save_pretrained(other)
    tiny.processor.save_pretrained(other)
    data, out = _gqa_data(tmp_path / "data", ["a", "b"]), tmp_path / "out"
    assert main(_eval_argv(checkpoint, data, out)) == 0
    capsys.readouterr()
    assert main(_eval_argv(other, data, out)) == 0
    err = capsys.readouterr().err
    assert "holds answers of other settings" in err and "differs in model" in err
    results = json.loads((out / "results.json").read_text())
    assert len(results) == 4  # two runs of each model
    by_model = {}
    for r in results:
        by_model.setdefault(r["label"].split(" [")[0], []).append(r)
    assert set(by_model) == {f"model {checkpoint.name}", f"model {other.name}"}
    assert {r["visual_tokens_before"] for r in by_model[f"model {checkpoint.name}"]} == {16}
    assert all(r["visual_tokens_before"] != 16 for r in by_model[f"model {other.name}"])  # its own token counts
    assert len(list((out / "runs").glob("*.jsonl"))) == 4
    # --fresh starts over: only this call's runs remain
    assert main(_eval_argv(other, data, out, "--fresh")) == 0
    assert len(json.loads((out / "results.json").read_text())) == 2


def test_a_run_whose_every_answer_fails_exits_1_with_one_line(checkpoint, tmp_path, capsys):
    data, out = _gqa_data(tmp_path / "data", ["a", "b"], bad_image=True), tmp_path / "out"
    assert main(_eval_argv(checkpoint, data, out)) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after transformers' loading bar
    assert err.startswith("gprune eval: error: all 2 runs evaluated nothing; first: none keep=1.0 evaluated nothing")
    assert "UnidentifiedImageError" in err and not (out / "results.json").exists()


def test_an_empty_dataset_exits_2(tmp_path, capsys):
    data = tmp_path / "empty.jsonl"
    data.write_text("\n")
    assert main(["eval", "--model", str(tmp_path), "--data", str(data), "--task", "gqa"]) == 2
    assert "no samples" in capsys.readouterr().err
