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
