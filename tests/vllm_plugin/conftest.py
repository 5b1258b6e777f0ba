"""vLLM plugin tests: run in the vLLM venv by scripts/test_vllm.sh; skipped wherever vLLM is not importable.

Engines run in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, one uniprocess worker, eager mode), so a
test can reach the model object and record what `embed_multimodal` hands the language model. Each
engine costs ~10 s to build: tests share one per configuration (module fixtures).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # before vLLM is imported
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


@pytest.fixture(scope="session")
def tmp_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("vllm_models")
