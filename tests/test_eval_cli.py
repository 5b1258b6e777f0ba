"""`gprune eval` argument parsing (the model path is covered in test_eval_hf.py)."""

from __future__ import annotations

import argparse
import json

import pytest

from gprune.cli import build_parser, main
from gprune.cli_eval import parse_json_object, parse_keeps, parse_methods
from gprune.cli_options import keeps_from_args, methods_from_args


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_parse_keeps_tells_ratios_from_token_budgets():
    assert parse_keeps("1.0,0.5,0.33,640") == [1.0, 0.5, 0.33, 640]
    assert isinstance(parse_keeps("640")[0], int) and isinstance(parse_keeps("1.0")[0], float)
    for bad in ("0", "1", "1.5", "half", "-3"):
        with pytest.raises(argparse.ArgumentTypeError, match="bad keep value"):
            parse_keeps(bad)


def test_parse_methods_checks_the_registry():
    assert parse_methods("gprune, random,divprune") == ["gprune", "random", "divprune"]
    with pytest.raises(argparse.ArgumentTypeError, match="unknown method"):
        parse_methods("gprune,fastv")


def test_parse_method_params():
    assert parse_json_object('{"random": {"seed": 2}}') == {"random": {"seed": 2}}
    with pytest.raises(argparse.ArgumentTypeError):
        parse_json_object('{"random": 2}')
    with pytest.raises(argparse.ArgumentTypeError):
        parse_json_object("{")


def test_eval_is_a_registered_command(capsys):
    args = build_parser().parse_args(
        ["eval", "--model", "m", "--data", "d.jsonl", "--task", "pope", "--keep", "0.5,64", "0.25", "--method", "dart"]
    )
    assert keeps_from_args(args) == [0.5, 64, 0.25] and args.task == "pope"
    assert methods_from_args(args, ["dart", "gprune"]) == ["dart"]


def test_eval_reports_a_missing_dataset_as_one_line(tmp_path, capsys):
    code = main(["eval", "--model", str(tmp_path), "--data", str(tmp_path / "none.jsonl"), "--task", "gqa"])
    assert code == 2
    assert "dataset file not found" in capsys.readouterr().err


def test_old_methods_flag_of_eval_still_works(capsys):
    from gprune.errors import UserError
    from gprune.methods import available_methods

    base = ["eval", "--model", "m", "--data", "d", "--task", "gqa"]
    args = build_parser().parse_args([*base, "--methods", "gprune,random"])
    assert methods_from_args(args, available_methods()) == ["gprune", "random"]
    assert "--methods is deprecated" in capsys.readouterr().err
    args = build_parser().parse_args([*base, "--method", "gprun"])
    with pytest.raises(UserError, match=r"unknown method 'gprun' \(did you mean 'gprune'\?\)"):
        methods_from_args(args, available_methods())


def test_eval_shares_the_default_keep_and_the_json_option():
    from gprune.cli_options import DEFAULT_KEEP

    parser = build_parser()
    args = parser.parse_args(["eval", "--model", "m", "--data", "d", "--task", "gqa"])
    assert keeps_from_args(args) == [DEFAULT_KEEP] and methods_from_args(args, ["gprune"]) == ["gprune"]
    sub = next(a for a in parser._actions if a.dest == "command").choices["eval"]
    option = next(a for a in sub._actions if "--json" in a.option_strings)
    assert (option.nargs, option.const, option.default) == ("?", "-", None)


def test_eval_missing_model_and_cuda_on_cpu_torch_are_one_line_errors(tmp_path, capsys, monkeypatch):
    import torch

    from gprune.cli_demo import sample_photo_path

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"image": sample_photo_path(), "question": "q", "answers": ["a"]}) + "\n")
    extra = ["--data", str(data), "--task", "gqa", "--out", str(tmp_path / "out")]
    code, _, err = run(capsys, "eval", "--model", str(tmp_path / "nope"), *extra)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"no such model directory: {tmp_path / 'nope'}" in err
    code, _, err = run(capsys, "eval", "--model", str(tmp_path / "nope"), "--device", "cuda", *extra)
    assert code == 2 and err.count("\n") == 1
    assert "--device cuda: this torch" in err and "sees no CUDA device; use --device cpu (or auto)" in err


def test_eval_json_prints_the_results_to_stdout(tmp_path, capsys):
    from PIL import Image

    from gprune.testing.llava import tiny_llava

    tiny = tiny_llava(seed=3)
    tiny.model.save_pretrained(tmp_path / "model")
    tiny.processor.save_pretrained(tmp_path / "model")
    Image.new("RGB", (40, 56), (200, 10, 10)).save(tmp_path / "red.png")
    data = tmp_path / "gqa.jsonl"
    data.write_text(json.dumps({"id": 0, "image": "red.png", "question": "Colour?", "answer": "red"}) + "\n")
    capsys.readouterr()
    code, out, err = run(
        capsys, "eval", "--model", str(tmp_path / "model"), "--data", str(data), "--task", "gqa",
        "--method", "gprune", "--keep", "0.5", "--out", str(tmp_path / "out"), "--max-new-tokens", "2",
        "--no-progress", "--no-plot", "--device", "cpu", "--json",
    )  # fmt: skip
    assert code == 0, err
    results = json.loads(out)  # stdout: the JSON only, no markdown table
    assert results == json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["method"] for r in results] == ["gprune"] and results[0]["keep"] == 0.5
