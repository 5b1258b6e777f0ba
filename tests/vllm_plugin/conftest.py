"""vLLM plugin tests: run in the vLLM venv by scripts/test_vllm.sh; skipped wherever vLLM is not importable.

Engines run in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, one uniprocess worker, eager mode), so a
test can reach the model object and record what `embed_multimodal` hands the language model. Each
engine costs ~10 s to build: tests share one per configuration (module fixtures). A test module defines
`checkpoint` (its tiny model folder); `plain` and `pruned` build its engines.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # before vLLM is imported
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


@pytest.fixture(scope="session")
def tmp_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("vllm_models")


@pytest.fixture(scope="module")
def plain(checkpoint: Path) -> Any:
    """The unpruned engine of the module's checkpoint."""
    from vllm_helpers import make_engine  # imports vLLM: only when a test (not skipped) asks

    return make_engine(checkpoint, limit_mm_per_prompt={"image": 3})


@pytest.fixture(scope="module")
def pruned(checkpoint: Path) -> Any:
    """The same checkpoint served through gprune's plugin at `vllm_helpers.KEEP`."""
    from vllm_helpers import KEEP, make_engine

    return make_engine(checkpoint, {"keep": KEEP}, limit_mm_per_prompt={"image": 3})
