"""`gprune visualize` end to end: a PNG of the promised size, and one-line errors on bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
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


def test_cli_with_a_saved_tiny_model(photo: Path, tmp_path: Path) -> None:
    from gprune.testing.llava import tiny_llava_next

    tiny = tiny_llava_next()
    tiny.model.save_pretrained(tmp_path / "model")
    tiny.processor.save_pretrained(tmp_path / "model")
    out = tmp_path / "kept_model.png"
    assert main(["visualize", "--image", str(photo), "--model", str(tmp_path / "model"), "--out", str(out)]) == 0
    with Image.open(out) as img:
        assert img.size == expected_png_size(1800, 200, 320, groups=2, steps=7)


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
