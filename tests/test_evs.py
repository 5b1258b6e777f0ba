"""The EVS-style temporal baseline: tokens that repeat the previous frame's token at their position go first."""

from __future__ import annotations

import pytest
import torch

import gprune
from gprune.config import GPruneConfig
from gprune.methods import available_methods, get_method
from gprune.methods.evs import temporal_dissimilarity

FRAMES, PER_FRAME, DIM = 4, 10, 16


def _video(changed: dict[int, list[int]], seed: int = 0) -> torch.Tensor:
    """FRAMES frames of PER_FRAME tokens; frame t repeats frame t-1 except at the positions `changed[t]`."""
    g = torch.Generator().manual_seed(seed)
    frames = [torch.randn(PER_FRAME, DIM, generator=g)]
    for t in range(1, FRAMES):
        frame = frames[-1].clone()
        for p in changed.get(t, []):
            frame[p] = torch.randn(DIM, generator=g)
        frames.append(frame)
    return torch.cat(frames)


def _select(x: torch.Tensor, count: int, frame_tokens: int | None = PER_FRAME) -> list[int]:
    mask = torch.ones(1, x.shape[0], dtype=torch.bool)
    return get_method("evs")(x.unsqueeze(0), mask, [count], frame_tokens=frame_tokens)[0].tolist()


def test_keeps_the_first_frame_and_exactly_the_changed_tokens() -> None:
    changed = {1: [2, 7], 2: [0], 3: [5, 6, 9]}
    x = _video(changed)
    want = list(range(PER_FRAME)) + sorted(t * PER_FRAME + p for t, ps in changed.items() for p in ps)
    assert "evs" in available_methods()
    assert _select(x, len(want)) == want
    # with less room, every kept token is a first-frame or a changed token, never a repeat
    assert set(_select(x, PER_FRAME + 2)) <= set(want)
    # a repeat scaled by a positive factor is still a repeat (the same direction): still dropped first
    x[3 * PER_FRAME + 1] *= 7.0
    assert _select(x, len(want)) == want


def test_dissimilarity_is_one_minus_cosine_to_the_same_position_one_frame_back() -> None:
    x = torch.randn(FRAMES * PER_FRAME, DIM)
    score = temporal_dissimilarity(x, PER_FRAME)
    assert bool(torch.isinf(score[:PER_FRAME]).all())
    i = 2 * PER_FRAME + 3
    want = 1 - torch.nn.functional.cosine_similarity(x[i], x[i - PER_FRAME], dim=0)
    torch.testing.assert_close(score[i], want)
    with pytest.raises(ValueError, match="frame_tokens"):
        temporal_dissimilarity(x, 0)


def test_without_frames_keeps_the_first_tokens() -> None:
    x = _video({1: [3]})
    assert _select(x, 5, frame_tokens=None) == [0, 1, 2, 3, 4]


def test_through_the_pipeline_on_a_qwen_video() -> None:
    """The pipeline tells EVS each video's frame length: with the whole video one group, frame 0 is kept."""
    from gprune.testing.qwen import tiny_qwen
    from gprune.video import kept_video_tokens
    from qwen_video_inputs import batch, sample
    from test_hf_qwen_video import _frames

    tiny = tiny_qwen("qwen2_vl")
    inputs = batch(tiny, [sample(tiny, ["watch", ("video", _frames(tiny, 6, 4, 6, 0)), "?"])])
    config = GPruneConfig(method="evs", video_window=0, video_keep=0.5)
    with gprune.pruned(tiny.model, config), torch.no_grad():
        tiny.model(**inputs)
        (video,) = gprune.last_report(tiny.model).images
    assert video.tokens_after == kept_video_tokens(3, 6, 0.5, window=0, method="evs") == 9
    assert video.kept_indices[:6].tolist() == list(range(6))  # the first frame, then the most changed
