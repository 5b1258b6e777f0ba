"""Conformance with transformers' generation and model tests on **video** prompts, for the families that prune
videos (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, LLaVA-OneVision).

Every behaviour of `conformance_cases` (greedy, beam, sampling, assisted and prompt-lookup decoding, static
cache, continuing from a returned cache, padded and unpadded prompts, ``inputs_embeds``, ``labels`` with loss
keyword arguments, ``logits_to_keep``, scores and logits, padding-free packed inputs, a wrong placeholder
count -- here the video's) runs on prompts holding a video alone or an image then a video
(`video_conformance_cases`), with ``video_window`` 1 (a graph per frame) and 0 (the whole video), three ways:
unpruned (skipped with the model's own error where it refuses the behaviour); with keep = video_keep = 1.0,
every tensor identical; with keep = video_keep = 0.5, no error, the same shapes, finite values, and
``generate`` returning the original prompt followed by the new tokens. The checks are `conformance_cases`'; on
top of them `VideoFamily.check_report` asserts that the call pruned the prompts' videos (and images) and that
each video kept `gprune.video.kept_video_tokens` of its shape, with window 1 the same share of every frame.
4 families x 2 contents x 2 windows x 21 behaviours = 336 cases, about 30 s on one thread.

Test ids read ``test_conformance_video[<family>-<content>-w<window>-<behaviour>]``.
"""

from __future__ import annotations

from typing import Any

import pytest

from conformance_cases import BEHAVIOURS, conform
from video_conformance_cases import CONTENTS, VIDEO_FAMILIES, VideoFamily, build_video

WINDOWS = (1, 0)
CASES = [
    (family, content, window, behaviour)
    for family in VIDEO_FAMILIES
    for content in CONTENTS
    for window in WINDOWS
    for behaviour in BEHAVIOURS
]


def case_id(case: tuple[str, str, int, str]) -> str:
    family, content, window, behaviour = case
    return f"{family}-{content}-w{window}-{behaviour}"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py; zoo: the tiny models, built once


def family_of(zoo: dict[str, Any], name: str, content: str, window: int) -> VideoFamily:
    if name not in zoo:
        zoo.clear()  # cases are ordered by family: the previous family is done
        zoo[name] = build_video(name)
    return VideoFamily(name, zoo[name], content=content, window=window)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_conformance_video(zoo: dict[str, Any], case: tuple[str, str, int, str]) -> None:
    name, content, window, behaviour = case
    conform(family_of(zoo, name, content, window), behaviour)
