"""`gprune visualize` end to end: a PNG of the promised size, and one-line errors on bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gprune.cli import main


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "blocks.png"
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, (5, 8, 3), dtype=np.uint8)
    Image.fromarray(np.repeat(np.repeat(blocks, 40, axis=0), 40, axis=1)).save(path)  # 200 x 320
    return path


def expected_png_size(width: int, image_h: int, image_w: int, groups: int, steps: int) -> tuple[int, int]:
    """The layout promised by gprune.visualize.plot: header, overlay row, then one flow row per group."""
    header, title = 56, 34
    top = width / groups * image_h / image_w
    flow = width / steps * image_h / image_w
    return width, round(header + top + title + groups * (flow + title))


def test_cli_writes_png_of_expected_size(photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "kept.png"
    rc = main(["visualize", "--image", str(photo), "--keep", "0.2", "--width", "700", "--out", str(out)])
    assert rc == 0
    with Image.open(out) as img:
        assert img.format == "PNG"
        # LLaVA-NeXT: 2 groups; 5 iterations -> flow maps t = 0..5 plus the score rank: 7 columns
        assert img.size == expected_png_size(700, 200, 320, groups=2, steps=7)
    stdout = capsys.readouterr().out
    assert "gprune kept" in stdout and "newlines" in stdout and f"wrote {out}" in stdout


def test_cli_vit_packing_and_other_method(photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "kept_random.png"
    args = ["visualize", "--image", str(photo), "--packing", "llava", "--method", "random", "--iterations", "2"]
    assert main([*args, "--width", "600", "--out", str(out)]) == 0
    with Image.open(out) as img:
        assert img.size == expected_png_size(600, 200, 320, groups=1, steps=4)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LLaVA-NeXT checkpoint with its processor, as `save_pretrained` writes it."""
    from gprune.testing.llava import tiny_llava_next

    path = tmp_path_factory.mktemp("tiny-llava-next")
    tiny = tiny_llava_next()
    tiny.model.save_pretrained(path)
    tiny.processor.save_pretrained(path)
    return path


def test_cli_with_a_saved_tiny_model(photo: Path, saved_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "kept_model.png"
    assert main(["visualize", "--image", str(photo), "--model", str(saved_model), "--out", str(out)]) == 0
    with Image.open(out) as img:
        assert img.size == expected_png_size(1800, 200, 320, groups=2, steps=7)


@pytest.mark.parametrize(
    ("flags", "dtype", "eager"),
    [
        ([], torch.float32, False),  # the defaults: float32 on cpu, transformers' attention (sdpa)
        (["--dtype", "bfloat16", "--attn-implementation", "eager"], torch.bfloat16, True),
        (["--dtype", "float16", "--device", "cpu"], torch.float16, False),
    ],
)
def test_loading_flags_reach_the_model_that_makes_the_features(
    photo: Path,
    saved_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    dtype: torch.dtype,
    eager: bool,
) -> None:
    from gprune.visualize import model_features as mf

    seen: list[tuple[torch.dtype, str, str]] = []
    original = mf.model_features

    def spy(model, views, geometry):  # type: ignore[no-untyped-def]
        param = next(model.parameters())
        seen.append((param.dtype, param.device.type, model.config._attn_implementation))
        return original(model, views, geometry)

    monkeypatch.setattr(mf, "model_features", spy)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # --device auto means cpu on any machine
    out = tmp_path / "kept.png"
    argv = ["visualize", "--image", str(photo), "--model", str(saved_model), "--width", "300", "--out", str(out)]
    assert main([*argv, *flags, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(seen) == 1
    got_dtype, device, attention = seen[0]
    assert (got_dtype, device) == (dtype, "cpu")
    assert (attention == "eager") is eager
    assert report["model"] == {
        "name": str(saved_model),
        "device": "cpu",
        "dtype": str(dtype).removeprefix("torch."),
        "attn_implementation": attention,
    }
    assert report["kept"]["total"] > 0 and out.is_file()


def error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """The one stderr line of a command that must fail with exit status 2, without the 'gprune X: ' prefix."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.split(": error: ", 1)[1]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("cuda", "--device cuda: this torch"),
        ("cuda:1", "--device cuda:1: this torch"),
        ("missing", "no such model directory"),
        ("weights-only", "no processor could be loaded from"),
        ("bad-attention", "cannot load the weights of"),
    ],
)
def test_loading_errors_are_run_s_one_line_errors(
    photo: Path,
    saved_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    case: str,
    message: str,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a CPU build of torch
    monkeypatch.chdir(tmp_path)
    model, flags = str(saved_model), []
    if case.startswith("cuda"):
        flags = ["--device", case]
    elif case == "missing":
        model = str(tmp_path / "no" / "such-model")
    elif case == "weights-only":
        from gprune.testing.llava import tiny_llava_next

        model = str(tmp_path / "weights-only")
        tiny_llava_next().model.save_pretrained(model)
        capsys.readouterr()  # save_pretrained's progress bar
    else:
        flags = ["--attn-implementation", "no-such-kernel"]
    visualize = error_line(capsys, ["visualize", "--image", str(photo), "--model", model, *flags])
    run = error_line(capsys, ["run", "--image", str(photo), "--model", model, "--prompt", "Hi", *flags])
    assert visualize == run  # the same check, the same words
    assert message in visualize
    assert not (tmp_path / "kept.png").exists()


@pytest.mark.parametrize(
    "flags",
    [
        ["--device", "cpu"],
        ["--dtype", "bfloat16"],
        ["--attn-implementation", "eager"],
        ["--trust-remote-code"],
    ],
)
@pytest.mark.parametrize("features", [[], ["--features", "pixels"], ["--features", "dinov2"]])
def test_loading_flag_without_model_is_an_error_naming_it(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], features: list[str]
) -> None:
    out = tmp_path / "kept.png"
    err = error_line(capsys, ["visualize", "--image", str(photo), *features, *flags, "--out", str(out)])
    assert err.startswith(f"{flags[0]} sets how the --model checkpoint loads: give --model")
    assert not out.exists()


def test_dinov2_checkpoint_takes_no_loading_flags(
    photo: Path, saved_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["visualize", "--image", str(photo), "--features", "dinov2", "--model", str(saved_model)]
    err = error_line(capsys, [*argv, "--dtype", "bfloat16", "--device", "cpu", "--out", str(tmp_path / "k.png")])
    assert err.startswith("--device and --dtype set how a LLaVA --model loads")
    assert "--features dinov2" in err


def test_model_type_visualize_cannot_map_is_refused_before_the_weights(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        tmp_path
    )
    err = error_line(capsys, ["visualize", "--image", str(photo), "--model", str(tmp_path), "--out", "unused.png"])
    assert err == f"visualize maps tokens to pixels for model_type llava_next, llava; {str(tmp_path)!r} is 'llama'\n"


def test_visualize_and_run_define_the_loading_options_once() -> None:
    from gprune.cli import build_parser
    from gprune.cli_options import MODEL_OPTIONS

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices

    def option(command: str, flag: str) -> tuple[object, ...]:
        action = next(a for a in commands[command]._actions if flag in a.option_strings)
        return (action.dest, action.default, action.help, action.choices, action.nargs, action.const, action.metavar)

    for flag, dest, default in MODEL_OPTIONS:
        assert option("visualize", flag) == option("run", flag)
        assert option("visualize", flag)[:2] == (dest, default)
    assert option("visualize", "--seed") == option("run", "--seed")


def test_api_loads_a_path_through_the_same_loader(saved_model: Path) -> None:
    from gprune.visualize.model_features import load_model

    model, image_processor = load_model(str(saved_model), dtype="bfloat16", attn_implementation="eager")
    assert next(model.parameters()).dtype == torch.bfloat16
    assert model.config._attn_implementation == "eager" and not model.training
    assert type(image_processor).__name__.startswith("LlavaNextImageProcessor")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--image", "no/such/photo.jpg"], "image file not found: no/such/photo.jpg"),
        (["--image", "."], "--image . is a directory: give an image file"),
        (["--keep", "0.0"], "a ratio must be in (0, 1]"),
        (["--method", "gprun"], "unknown method 'gprun' (did you mean 'gprune'?)"),
        (["--features", "model"], "needs a model"),
        (["--out", "no/such/folder/kept.png"], "output folder does not exist"),
        (["--iterations", "0"], "iterations must be >= 1"),
    ],
)
def test_cli_bad_input_is_one_line_error(
    photo: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["visualize", "--image", str(photo), *args]
    if "--out" not in args:
        argv += ["--out", "unused.png"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gprune visualize: error: ") and message in err
    assert not Path("unused.png").exists()


def test_cli_without_matplotlib_names_the_extra(
    photo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["visualize", "--image", str(photo), "--out", "unused.png"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'gprune[viz]'" in err and err.count("\n") == 1


def test_visualize_shares_the_vocabulary() -> None:
    from gprune import cli_visualize
    from gprune.cli import build_parser
    from gprune.cli_options import DEFAULT_KEEP, keep_from_args
    from gprune.visualize.analysis import FEATURE_SOURCES
    from gprune.visualize.geometry import PACKINGS

    parser = build_parser()
    assert keep_from_args(parser.parse_args(["visualize", "--image", "x.jpg"])) == DEFAULT_KEEP
    sub = next(a for a in parser._actions if a.dest == "command").choices["visualize"]
    option = next(a for a in sub._actions if "--json" in a.option_strings)
    assert (option.nargs, option.const, option.default) == ("?", "-", None)
    # copies kept so that `gprune --help` imports no torch
    assert tuple(cli_visualize.FEATURE_SOURCES) == tuple(FEATURE_SOURCES)
    assert set(cli_visualize.PACKING_NAMES) == set(PACKINGS)


def test_old_keep_ratio_flag_still_works(photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "old.png"
    assert main(["visualize", "--image", str(photo), "--keep-ratio", "0.2", "--width", "300", "--out", str(out)]) == 0
    assert "--keep-ratio is deprecated and will be removed in the next release; use --keep" in capsys.readouterr().err
