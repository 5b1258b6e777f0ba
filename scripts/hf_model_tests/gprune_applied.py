"""pytest plugin: run transformers' own model tests with gprune applied to every model they build.

Load it with ``-p gprune_applied`` (this folder on ``PYTHONPATH``) and enable it with ``--gprune``.
While enabled, every model instance whose ``config.model_type`` gprune supports and that is a
``*ForConditionalGeneration`` with ``generate`` gets ``gprune.apply(model, GPruneConfig(keep=...))`` at
the end of its construction (``PreTrainedModel.post_init``, which ``__init__``, ``from_config`` and
``from_pretrained`` all run). The hook lives in this test harness only; gprune itself never patches
transformers. Each test records how many models it pruned as the junit property ``gprune_applied``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

_applied_in_test = 0
_applied_total = 0
_undo: list[Callable[[], None]] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gprune", "apply gprune to every supported model the tests build")
    group.addoption("--gprune", action="store_true", help="apply gprune.apply(model, GPruneConfig(keep=...))")
    group.addoption("--gprune-keep", type=float, default=1.0, help="keep ratio passed to GPruneConfig (default 1.0)")


def _should_prune(model: Any, supported: frozenset[str]) -> bool:
    config = getattr(model, "config", None)
    return (
        getattr(config, "model_type", None) in supported
        and type(model).__name__.endswith("ForConditionalGeneration")
        and callable(getattr(model, "generate", None))
    )


def _install(keep: float) -> None:
    import transformers

    import gprune

    supported = frozenset(gprune.supported_model_types())
    config = gprune.GPruneConfig(keep=keep)
    original: Callable[..., None] = transformers.PreTrainedModel.post_init

    def post_init(self: Any, *args: Any, **kwargs: Any) -> None:
        global _applied_in_test
        original(self, *args, **kwargs)
        if _should_prune(self, supported) and not gprune.is_pruned(self):
            gprune.apply(self, config)
            _applied_in_test += 1

    transformers.PreTrainedModel.post_init = post_init  # type: ignore[method-assign]
    _undo.append(lambda: setattr(transformers.PreTrainedModel, "post_init", original))


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--gprune"):
        _install(config.getoption("--gprune-keep"))


def pytest_unconfigure(config: pytest.Config) -> None:
    while _undo:
        _undo.pop()()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    global _applied_in_test
    _applied_in_test = 0


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if item.config.getoption("--gprune"):
        item.user_properties.append(("gprune_applied", str(_applied_in_test)))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    global _applied_total
    if report.when == "teardown":
        _applied_total += sum(int(v) for k, v in report.user_properties if k == "gprune_applied")


def pytest_report_header(config: pytest.Config) -> str | None:
    if not config.getoption("--gprune"):
        return None
    return f"gprune: applied to supported *ForConditionalGeneration models, keep={config.getoption('--gprune-keep')}"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if config.getoption("--gprune"):
        terminalreporter.write_line(f"gprune: applied to {_applied_total} model instances")
