"""`gprune eval` argument parsing (the model path is covered in test_eval_hf.py)."""

from __future__ import annotations

import argparse

import pytest

from gprune.cli import build_parser, main
from gprune.cli_eval import parse_json_object, parse_keeps, parse_methods


def test_parse_keeps_tells_ratios_from_token_budgets():
    assert parse_keeps("1.0,0.5,0.33,640") == [1.0, 0.5, 0.33, 640]
    assert isinstance(parse_keeps("640")[0], int) and isinstance(parse_keeps("1.0")[0], float)
    for bad in ("0", "1.5", "half", "-3"):
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
        ["eval", "--model", "m", "--data", "d.jsonl", "--task", "pope", "--keep", "0.5,64", "--methods", "dart"]
    )
    assert args.keep == [0.5, 64] and args.methods == ["dart"] and args.task == "pope"


def test_eval_reports_a_missing_dataset_as_one_line(tmp_path, capsys):
    code = main(["eval", "--model", str(tmp_path), "--data", str(tmp_path / "none.jsonl"), "--task", "gqa"])
    assert code == 2
    assert "dataset file not found" in capsys.readouterr().err
