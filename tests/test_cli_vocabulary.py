"""One vocabulary across the API, every CLI command and lmms-eval's model_args; fast --help; gprune env.

Each test checks something a user sees: the forms ``--keep`` accepts, the one default, the deprecation
messages of the old spellings, "did you mean", what ``--json`` does, and the one-line errors (exit 2).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gprune.cli import build_parser, main
from gprune.cli_options import (
    DEFAULT_ITERATIONS,
    DEFAULT_KEEP,
    DEFAULT_SIMILARITY_THRESHOLD,
    DEFAULT_TEMPERATURE,
    EXAMPLE_METHODS,
    POSITION_MODES,
    keep_from_args,
    keeps_from_args,
    parse_keep,
    parse_keep_list,
)
from gprune.errors import UserError
from gprune.model_args import MODEL_ARGS, build_config, check_model_arg_names, keep_from_model_args


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------------------------------- keep forms


def test_keep_is_a_ratio_or_a_token_budget():
    assert parse_keep("0.5") == 0.5 and isinstance(parse_keep("1.0"), float)
    assert parse_keep("640") == 640 and isinstance(parse_keep("640"), int)
    assert parse_keep("1e-1") == 0.1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1", "keep 1 is ambiguous: write 1.0 to keep every visual token"),
        ("0", "a token budget must be >= 2"),
        ("-3", "a token budget must be >= 2"),
        ("1.5", "a ratio must be in (0, 1]"),
        ("nan", "a ratio must be in (0, 1]"),
        ("half", "expected a ratio in (0, 1] such as 0.5"),
    ],
)
def test_bad_keep_values_say_what_to_write(text, message):
    with pytest.raises(UserError, match="^--keep: ") as info:
        parse_keep(text)
    assert message in str(info.value)


def test_keep_lists_take_spaces_commas_or_both():
    assert parse_keep_list(["0.5", "0.33"]) == parse_keep_list(["0.5,0.33"]) == parse_keep_list("0.5, 0.33")
    assert parse_keep_list(["1.0,0.5", "640"]) == [1.0, 0.5, 640]
    with pytest.raises(UserError, match="give at least one value"):
        parse_keep_list([","])


# ------------------------------------------------------------------------------------- one default keep


def _args(*argv):
    return build_parser().parse_args(list(argv))


def test_one_default_keep_everywhere():
    from gprune.config import GPruneConfig

    assert DEFAULT_KEEP == GPruneConfig().keep == 0.5
    assert keep_from_args(_args("run", "--model", "m", "--image", "x.jpg", "--prompt", "q")) == DEFAULT_KEEP
    assert keep_from_args(_args("demo")) == DEFAULT_KEEP
    # visualize and eval: tests/test_visualize_cli.py, tests/test_eval_cli.py
    assert keep_from_model_args() == DEFAULT_KEEP
    # Sweeping commands that compare settings default to a sweep that includes the default.
    assert DEFAULT_KEEP in keeps_from_args(_args("flops", "llava-1.5-7b"))
    assert DEFAULT_KEEP in keeps_from_args(_args("bench"))


def test_copied_names_match_their_sources():
    """cli_options and the command modules copy a few names so --help needs no torch; they must not drift."""
    from gprune import benchmark, cli_bench, cli_flops, core, flops
    from gprune.config import POSITION_MODES as CONFIG_POSITIONS
    from gprune.methods import available_methods

    assert set(EXAMPLE_METHODS) <= set(available_methods())
    assert POSITION_MODES == CONFIG_POSITIONS
    assert (DEFAULT_SIMILARITY_THRESHOLD, DEFAULT_TEMPERATURE, DEFAULT_ITERATIONS) == (
        core.DEFAULT_SIMILARITY_THRESHOLD,
        core.DEFAULT_TEMPERATURE,
        core.DEFAULT_ITERATIONS,
    )
    assert tuple(cli_flops.ATTENTION_MODE_NAMES) == tuple(flops.ATTENTION_MODES)
    assert set(cli_flops.KV_DTYPE_NAMES) == set(cli_flops.kv_dtypes())
    assert cli_flops.bundled_names() == __import__("gprune.checkpoints").checkpoints.bundled_checkpoints()
    assert (cli_bench.DEFAULT_KEEPS, cli_bench.MID_SIZE) == (benchmark.DEFAULT_KEEPS, benchmark.MID_SIZE)


# ------------------------------------------------------------------------- old spellings, did you mean


def test_old_keep_flags_still_work_with_a_deprecation_message(capsys):
    code, out, err = run(capsys, "flops", "llava-1.5-7b", "--keep-ratio", "0.5", "0.11", "--json")
    assert code == 0
    assert [r["keep"] for r in json.loads(out)["rows"]] == [None, 0.5, 0.11]
    assert "--keep-ratio is deprecated and will be removed in the next release; use --keep" in err
    code, out, err = run(capsys, "flops", "llava-1.5-7b", "--keep-tokens", "1", "64", "--json")
    assert code == 0 and "--keep-tokens is deprecated" in err
    assert [r["keep"] for r in json.loads(out)["rows"]] == [None, 1, 64]  # the old flag said tokens: 1 is one


def test_old_and_new_keep_flags_together_are_refused(capsys):
    code, _, err = run(capsys, "flops", "llava-1.5-7b", "--keep", "0.5", "--keep-ratio", "0.3")
    assert code == 2 and "give --keep only" in err


def test_single_value_commands_refuse_a_list(capsys):
    code, _, err = run(capsys, "run", "--model", "m", "--image", "x.jpg", "--prompt", "q", "--keep", "0.5,0.3")
    assert code == 2 and "--keep takes one value here" in err and err.count("\n") == 1


# ------------------------------------------------------------------------------------ lmms-eval model_args


def test_model_args_keep_forms_and_deprecations():
    messages: list[str] = []
    assert keep_from_model_args(0.25) == 0.25 and keep_from_model_args(640) == 640
    assert keep_from_model_args("0.5") == 0.5
    assert keep_from_model_args(keep_ratio=0.33, warn=messages.append) == 0.33
    assert keep_from_model_args(keep_tokens=64, warn=messages.append) == 64
    assert keep_from_model_args(keep_tokens=1, warn=messages.append) == 1
    assert len(messages) == 3 and all("is deprecated and goes in the next release; use keep=" in m for m in messages)
    with pytest.raises(ValueError, match="keep 1 is ambiguous"):
        keep_from_model_args(1)
    with pytest.raises(ValueError, match="give one of keep / keep_ratio / keep_tokens, not keep and keep_ratio"):
        keep_from_model_args(0.5, 0.5)


def test_unknown_model_args_name_the_closest_key():
    check_model_arg_names(["keep", "keep_ratio", "dtype"])
    with pytest.raises(ValueError, match=r"'kep' \(did you mean 'keep'\?\)") as info:
        check_model_arg_names(["kep", "pretrained"])
    assert "known: " + ", ".join(MODEL_ARGS) in str(info.value)
    with pytest.raises(ValueError, match=r"unknown method 'dvprune' \(did you mean 'divprune'\?\)"):
        build_config("dvprune", 0.5, "original", None, None, None, None)
    config = build_config("random", 64, "compact", None, None, None, '{"seed": 3}')
    assert (config.keep, config.positions, config.method_params) == (64, "compact", {"seed": 3})
    assert build_config("none", None, "original", None, None, None, None) is None


# ------------------------------------------------------------------------------------------------ --json


def test_json_alone_prints_only_json_and_json_path_writes_a_file(tmp_path, capsys):
    code, out, _ = run(capsys, "flops", "llava-1.5-7b", "--keep", "0.5", "--json")
    assert code == 0 and json.loads(out)["model"] == "llava-1.5-7b"
    path = tmp_path / "f.json"
    code, out, err = run(capsys, "flops", "llava-1.5-7b", "--keep", "0.5", "--json", str(path))
    assert code == 0 and "LLM TFLOPs" in out and f"wrote {path}" in err
    assert json.loads(path.read_text())["rows"][1]["keep"] == 0.5
    # `--json NAME` before the positional reads NAME as the model, not a file to write.
    code, out, _ = run(capsys, "flops", "--json", "llava-1.5-7b")
    assert code == 0 and json.loads(out)["model"] == "llava-1.5-7b"
    code, _, err = run(capsys, "flops", "llava-1.5-7b", "--json", str(tmp_path / "no" / "f.json"))
    assert code == 2 and "--json: folder" in err and "does not exist" in err


def json_option(command: str):
    """The ``--json`` option of a command (eval and visualize: checked in their own test files)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return next(a for a in sub._actions if "--json" in a.option_strings)


@pytest.mark.parametrize("command", ["run", "demo", "flops", "bench", "env"])
def test_every_command_has_the_same_json_option(command):
    option = json_option(command)
    assert (option.nargs, option.const, option.default) == ("?", "-", None)


# ------------------------------------------------------------------------------------- fast --help, env


def test_import_gprune_is_lazy_but_complete():
    code = (
        "import sys, gprune\n"
        "assert 'torch' not in sys.modules\n"
        "assert gprune.GPruneConfig(keep=0.5).keep == 0.5 and gprune.core.DEFAULT_ITERATIONS == 5\n"
        "assert callable(gprune.select_tokens) and 'select_tokens' in dir(gprune)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr
    import gprune

    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        _ = gprune.nope


def test_env_reports_versions_and_devices(capsys):
    code, out, _ = run(capsys, "env")
    assert code == 0
    for name in ("gprune", "torch", "transformers", "lmms-eval", "vllm", "python", "CPUs", "CUDA", "--device auto"):
        assert name in out
    code, out, _ = run(capsys, "env", "--json")
    env = json.loads(out)
    import torch

    assert env["packages"]["torch"] == torch.__version__.split("+")[0] or env["packages"]["torch"] == torch.__version__
    assert env["cpu_count"] >= 1 and env["cuda_available"] == torch.cuda.is_available()


# ----------------------------------------------------------------------------- loading: one-line errors


def test_local_paths_are_not_hub_ids(tmp_path, monkeypatch):
    from gprune.cli_model import check_model_source, looks_like_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    assert not looks_like_path("llava-hf/llava-1.5-7b-hf")
    for name in ("./x", "../x", "/x/y", "~/x", "models/llava", "a/b/c"):
        assert looks_like_path(name), name
    with pytest.raises(UserError, match="^no such model directory: models/llava "):
        check_model_source("models/llava")
    (tmp_path / "w.bin").write_bytes(b"")
    with pytest.raises(UserError, match="w.bin is a file: --model takes a checkpoint folder"):
        check_model_source("./w.bin")
    with pytest.raises(UserError, match="has no config.json, so it is not a saved checkpoint"):
        check_model_source("./models")
    check_model_source("llava-hf/llava-1.5-7b-hf")  # a hub id: left to transformers


def test_run_missing_model_and_cuda_on_cpu_torch_are_one_line_errors(tmp_path, capsys, monkeypatch):
    import torch

    from gprune.cli_demo import sample_photo_path

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    extra = ["--image", sample_photo_path(), "--prompt", "q"]
    code, _, err = run(capsys, "run", "--model", str(tmp_path / "nope"), *extra)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"no such model directory: {tmp_path / 'nope'}" in err
    code, _, err = run(capsys, "run", "--model", str(tmp_path / "nope"), "--device", "cuda", *extra)
    assert code == 2 and err.count("\n") == 1
    assert "--device cuda: this torch" in err and "sees no CUDA device; use --device cpu (or auto)" in err


def test_bad_device_names_are_one_line_errors(monkeypatch):
    import torch

    from gprune.cli_model import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    with pytest.raises(UserError, match="is not a device: use auto, cpu, cuda"):
        resolve_device("gpu0")


def test_a_directory_as_image_says_so(tmp_path):
    from gprune.cli_run import load_image

    with pytest.raises(UserError, match=f"^--image {tmp_path} is a directory: give an image file"):
        load_image(str(tmp_path))
    with pytest.raises(UserError, match="^image file not found: "):
        load_image(str(tmp_path / "none.jpg"))


# --------------------------------------------------------------------------------- honest, plain output


def _report(others: float, device: str = "cpu") -> dict:
    timing = {"prefill_seconds": 0.1, "selection_seconds": 0.01, "others_cores": others, "answer": "a\x07b\nc"}
    return {
        "description": "gprune, keep ratio 0.5, positions original",
        "device": device,
        "visual_tokens": [100, 50],
        "visual_tokens_per_image": [[60, 30], [40, 20]],
        "prompt_tokens": [120, 70],
        "llm_prefill_flops": [2e9, 1e9],
        "pruned": timing,
        "unpruned": {**timing, "prefill_seconds": 0.2, "others_cores": 0.0},
    }


def test_timing_line_says_when_the_machine_was_busy():
    from gprune.cli_run import format_report

    lines = format_report(_report(others=1.4))
    timing = next(line for line in lines if line.startswith("prefill"))
    assert "(2.00x)" in timing
    assert "(machine busy: other processes used 1.4 cores during the timing" in timing
    assert not any("machine busy" in line for line in format_report(_report(others=0.1)))
    assert not any("machine busy" in line for line in format_report(_report(others=3.0, device="cuda:0")))
    assert "per image 60 -> 30, 40 -> 20" in lines[1]


def test_answers_are_plain_text_with_control_characters_replaced():
    from gprune.cli_run import format_report, printable

    assert printable("café\x00\x1b[2J ok\n") == "café\ufffd\ufffd[2J ok\n"
    lines = format_report(_report(others=0.0))
    assert "answer (pruned):   a\ufffdb\nc" in lines and "answer (unpruned): a\ufffdb\nc" in lines


def test_an_unreachable_hub_id_is_one_line_with_a_hint(monkeypatch):
    import transformers

    from gprune.cli_model import load_pretrained

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files. Check your connection.")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", offline)
    with pytest.raises(UserError) as info:
        load_pretrained("org/model", device="cpu")
    message = str(info.value)
    assert "\n" not in message and message.startswith("cannot load model 'org/model': We couldn't connect")
    assert "offline? a hub id needs the network or the local cache; give a local folder" in message
