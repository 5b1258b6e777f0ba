"""`gprune run` on a tiny LLaVA-NeXT saved to disk, and the offline `gprune demo`."""

from __future__ import annotations

import json
import re

import pytest
import torch
from PIL import Image

import gprune
from gprune.cli import main
from gprune.cli_demo import sample_photo_path
from gprune.cli_run import printable
from gprune.testing import tiny_llava_next


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llava-next")
    tiny = tiny_llava_next()
    tiny.model.save_pretrained(path)
    tiny.processor.save_pretrained(path)
    return path, tiny


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_saved_tiny_model_reloads_with_identical_logits(saved):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path, tiny = saved
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    image = Image.open(sample_photo_path()).convert("RGB")
    inputs = processor(images=[image], text=[tiny.prompt("What is it?")], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, tiny.model(**inputs).logits)


def test_run_prints_answer_tokens_and_prefill_time(saved, capsys):
    path, tiny = saved
    code, out, err = run(
        capsys, "run", "--model", str(path), "--image", sample_photo_path(), "--prompt", "What is it?",
        "--keep", "0.33", "--compare", "--max-new-tokens", "3",
    )  # fmt: skip
    assert code == 0, err
    before, after = map(int, re.search(r"visual tokens: (\d+) -> (\d+)", out).groups())
    assert before == gprune.image_layout(tiny.model, (400, 600)).length
    assert after == gprune.kept_tokens(tiny.model, (400, 600), 0.33) < before
    assert re.search(r"prefill \(to first token\): [\d.]+ ms pruned, [\d.]+ ms unpruned", out)
    assert "answer (pruned):" in out and "answer (unpruned):" in out


def test_run_with_a_token_budget_and_compact_positions(saved, capsys):
    path, _ = saved
    code, out, err = run(
        capsys, "run", "--model", str(path), "--image", sample_photo_path(), "--prompt", "What?",
        "--keep", "20", "--positions", "compact", "--max-new-tokens", "2",
    )  # fmt: skip
    assert code == 0, err
    assert re.search(r"visual tokens: \d+ -> 20 ", out)
    assert "positions compact" in out and "answer (unpruned)" not in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--image", "/no/such/photo.jpg"], "image file not found: /no/such/photo.jpg"),
        (["--keep", "1.5"], "--keep: a ratio must be in (0, 1] (or a whole number for a token budget), got 1.5"),
        (["--keep", "0"], "--keep: a token budget must be >= 2 (or a ratio in (0, 1]), got 0"),
        (["--keep", "1"], "--keep: keep 1 is ambiguous: write 1.0 to keep every visual token"),
        (["--image", "."], "--image . is a directory: give an image file"),
        (["--device", "cuda:0"], "sees no CUDA device; use --device cpu"),
        (["--method", "divprun"], "unknown method 'divprun' (did you mean 'divprune'?)"),
    ],
)
def test_user_mistakes_are_one_line_errors(saved, capsys, monkeypatch, argv, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a CPU build of torch
    path, _ = saved
    base = {"--model": str(path), "--image": sample_photo_path(), "--prompt": "What?"}
    args = ["run"]
    for flag, value in base.items():
        if flag not in argv:
            args += [flag, value]
    code, out, err = run(capsys, *args, *argv)
    assert code == 2
    assert err.strip().count("\n") == 0 and message in err and "Traceback" not in err


def test_unsupported_model_lists_the_supported_types(tmp_path, capsys):
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        tmp_path
    )
    code, _, err = run(capsys, "run", "--model", str(tmp_path), "--image", sample_photo_path(), "--prompt", "Hi")
    assert code == 2
    assert "does not support model_type 'llama'; supported:" in err and "llava_next" in err


def test_demo_runs_offline_and_says_the_weights_are_random(tmp_path, capsys):
    code, out, err = run(capsys, "demo", "--max-new-tokens", "2", "--json", str(tmp_path / "demo.json"))
    assert code == 0, err
    assert "RANDOM WEIGHTS" in out
    saved = json.loads((tmp_path / "demo.json").read_text())  # --json PATH: the text report and the file
    assert saved["command"] == "demo" and saved["config"]["keep"] == 0.5
    assert f"answer (pruned):   {printable(saved['pruned']['answer'])}\n" in out  # plain text, as `run` prints
    before, after = map(int, re.search(r"visual tokens: (\d+) -> (\d+)", out).groups())
    model = tiny_llava_next(tile=336, patch=14).model
    assert before == gprune.image_layout(model, (400, 600)).length > 576  # base view + grid + newlines
    assert after == gprune.kept_tokens(model, (400, 600), 0.5)  # the one default keep, 0.5


def test_run_takes_several_images_and_prints_json(saved, tmp_path, capsys):
    path, tiny = saved
    second = tmp_path / "second.png"
    Image.new("RGB", (300, 200), (10, 200, 30)).save(second)
    code, out, err = run(
        capsys, "run", "--model", str(path), "--image", sample_photo_path(), str(second), "--prompt", "Same?",
        "--keep", "0.25", "--max-new-tokens", "2", "--seed", "3", "--json",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)  # --json alone: stdout is JSON only
    layouts = [gprune.image_layout(tiny.model, size).length for size in ((400, 600), (200, 300))]
    kept = [gprune.kept_tokens(tiny.model, size, 0.25) for size in ((400, 600), (200, 300))]
    assert report["visual_tokens_per_image"] == [list(pair) for pair in zip(layouts, kept, strict=True)]
    assert report["visual_tokens"] == [sum(layouts), sum(kept)]
    assert report["images"] == [sample_photo_path(), str(second)] and report["config"]["keep"] == 0.25
    assert report["unpruned"] is None and isinstance(report["pruned"]["answer"], str)


def test_model_folder_without_a_processor_is_a_one_line_error_with_the_fix(saved, tmp_path, capsys):
    _, tiny = saved
    tiny.model.save_pretrained(tmp_path / "weights-only")
    capsys.readouterr()  # save_pretrained's own progress bar
    code, _, err = run(
        capsys, "run", "--model", str(tmp_path / "weights-only"), "--image", sample_photo_path(), "--prompt", "Hi"
    )
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"no processor could be loaded from {tmp_path / 'weights-only'}" in err
    assert "also run processor.save_pretrained(" in err
