"""The core works with torch alone, and the Hugging Face integration says clearly what it needs.

gprune must install next to another transformers (a serving engine's older pin) or none: ``import
gprune`` imports no transformers, and the integration checks the version when it is first used. This
file needs no transformers itself; scripts/test.sh also runs it in a venv without transformers.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

import gprune
from gprune.integrations import hf_version
from gprune.integrations.hf_version import TransformersVersionError, check_transformers_version, release

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

# Runs in a fresh interpreter where `import transformers` fails, as in an environment without it.
WITHOUT_TRANSFORMERS = textwrap.dedent(
    """
    import sys
    sys.modules["transformers"] = None  # any import of transformers or its submodules now fails

    from types import SimpleNamespace
    import torch
    import gprune

    torch.manual_seed(0)
    features = torch.randn(2, 40, 16)
    scores = gprune.graph_scores(features)
    assert scores.shape == (2, 40) and torch.isfinite(scores).all()
    kept = gprune.select_tokens(features, keep=0.5)
    assert [k.tolist() for k in kept] == [sorted(k.tolist()) for k in kept] and all(len(k) == 20 for k in kept)
    assert len(gprune.information_flow(features[0])) == 6

    layout = gprune.llava_next_layout(16, 4, 4)
    packed = torch.randn(layout.length, 16)
    kept = gprune.select_llava_next(packed, base_tokens=16, grid_rows=4, grid_cols=4, keep=0.5)
    assert len(kept) == gprune.kept_token_count(layout, 0.5)
    for method in gprune.available_methods():
        config = gprune.GPruneConfig(keep=0.5, method=method)
        kept = gprune.select_in_layout(packed, layout, config.keep, method=method, **config.selector_params())
        assert len(kept) == gprune.kept_token_count(layout, 0.5, method=method), method
    assert gprune.select_in_layout(packed, gprune.single_group_layout(layout.length), 8).numel() == 8

    text = SimpleNamespace(model_type="llama", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=128, vocab_size=100)
    decoder = SimpleNamespace(get_text_config=lambda: text)
    assert gprune.llm_prefill_flops(decoder, 100) > gprune.llm_prefill_flops(decoder, 50) > 0
    assert gprune.kv_cache_bytes(decoder, 10) == 2 * 2 * 4 * 16 * 10 * 2
    assert "llava_next" in gprune.supported_model_types()

    for name in gprune.__all__:
        getattr(gprune, name)
    try:
        gprune.apply(object())
    except ImportError as err:
        print("APPLY:", err)
    else:
        raise AssertionError("gprune.apply ran without transformers")

    from gprune.cli import main
    try:
        main(["--help"])
    except SystemExit as err:
        assert err.code == 0
    assert main(["flops", "llava-v1.6-vicuna-7b"]) == 2  # a clear one-line error, not a traceback
    loaded = [m for m in sys.modules if m == "transformers" or m.startswith("transformers.")]
    assert loaded == ["transformers"] and sys.modules["transformers"] is None, loaded
    print("CORE OK")
    """
)


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_core_works_and_apply_explains_without_transformers() -> None:
    result = _python(WITHOUT_TRANSFORMERS)
    assert result.returncode == 0, result.stderr
    assert "CORE OK" in result.stdout
    message = re.search(r"APPLY: (.*)", result.stdout)
    assert message is not None
    assert "not installed" in message.group(1) and "pip install 'gprune[hf]'" in message.group(1)
    assert "transformers>=" + hf_version.MIN_TRANSFORMERS in result.stderr  # the CLI's one-line error


def test_import_gprune_imports_no_transformers() -> None:
    code = "import sys, gprune, gprune.cli; print(sorted(m for m in sys.modules if m.split('.')[0] == 'transformers'))"
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_lazy_names_are_listed_and_resolve() -> None:
    from gprune.adapters import supported_model_types
    from gprune.integrations import hf

    assert set(gprune.__all__) <= set(dir(gprune))
    assert gprune.apply is hf.apply and gprune.kept_tokens is hf.kept_tokens and gprune.remove is hf.remove
    assert gprune.supported_model_types is supported_model_types
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        gprune.nope  # noqa: B018


@pytest.mark.parametrize(
    ("version", "parts"), [("5.23", (5, 23, 0)), ("5.24.0", (5, 24, 0)), ("5.25.0.dev0", (5, 25, 0)), ("6", (6, 0, 0))]
)
def test_release(version: str, parts: tuple[int, ...]) -> None:
    assert release(version) == parts


@pytest.mark.parametrize("installed", ["5.23.0", "5.24.0", "5.30.0.dev0", "6.0.0"])
def test_supported_versions_pass(installed: str) -> None:
    check_transformers_version(installed)


@pytest.mark.parametrize("installed", ["5.19.0", "5.22.9", "4.57.1"])
def test_old_transformers_gets_a_clear_error(installed: str) -> None:
    with pytest.raises(TransformersVersionError) as info:
        check_transformers_version(installed)
    message = str(info.value)
    assert f"transformers {installed}" in message
    assert f"transformers>={hf_version.MIN_TRANSFORMERS}" in message and "pip install 'gprune[hf]'" in message


def test_apply_checks_the_installed_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", types.SimpleNamespace(__version__="5.19.0"))
    hf_version.require_transformers.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"installed: transformers 5\.19\.0"):
            gprune.apply(object())
    finally:
        hf_version.require_transformers.cache_clear()


def test_pyproject_matches_the_supported_range() -> None:
    """One lower bound: the `hf` extra's, which the runtime check and scripts/setup.sh's lowest venv use."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("transformers")]
    extras = project["optional-dependencies"]
    assert [d for d in extras["hf"] if d.startswith("transformers")] == [f"transformers>={hf_version.MIN_TRANSFORMERS}"]
    for name in ("test", "eval", "cli", "viz"):
        assert "gprune[hf]" in extras[name], name
