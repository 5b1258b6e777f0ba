"""GPruneConfig validates every field by name and round-trips through dict and JSON."""

from __future__ import annotations

import warnings

import pytest

from gprune import PAPER_SIMILARITY_THRESHOLD, GPruneConfig


@pytest.mark.parametrize(
    "config",
    [GPruneConfig(), GPruneConfig(keep=320, positions="compact"),
     GPruneConfig(keep=1 / 3, similarity_threshold=PAPER_SIMILARITY_THRESHOLD, temperature=0.05, iterations=3)],
)
def test_round_trip(config: GPruneConfig) -> None:
    assert GPruneConfig.from_dict(config.to_dict()) == config
    again = GPruneConfig.from_json(config.to_json())
    assert again == config and type(again.keep) is type(config.keep)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("keep", 0, "keep"), ("keep", 1.2, "keep"), ("similarity_threshold", 1.0, "similarity_threshold"),
     ("temperature", 0, "temperature"), ("iterations", 0, "iterations"), ("positions", "gapped", "positions"),
     ("method", "magic", "method")],
)
def test_validation_names_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        GPruneConfig(**{field: value})


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown GPruneConfig field.*keep_ratio"):
        GPruneConfig.from_dict({"keep_ratio": 0.5})
    with pytest.raises(ValueError, match="must be an object"):
        GPruneConfig.from_json("[1, 2]")


def test_defaults_are_the_released_code_settings() -> None:
    c = GPruneConfig()
    assert (c.keep, c.similarity_threshold, c.temperature, c.iterations, c.positions) == (0.5, 0.5, 0.03, 5, "original")


def test_python_keep_1_warns_that_it_is_one_token():
    with pytest.warns(UserWarning, match=r"keeps ONE visual token per image; write keep=1.0 for no pruning"):
        GPruneConfig(keep=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GPruneConfig(keep=1.0)
        GPruneConfig(keep=2)
