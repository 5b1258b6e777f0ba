"""Video prompts for `test_conformance_video.py`: the behaviours of `conformance_cases` on videos.

`VideoFamily` is a `conformance_cases.Family` whose prompts hold a video alone or an image and then a video,
pruned with ``keep = video_keep`` and a given ``video_window``; every behaviour, check and comparison is
`conformance_cases`' own. Qwen-VL prompts are built by hand as the processors would
(`qwen_video_inputs`: the video processors need torchvision), LLaVA-OneVision's by its real processor with
`onevision_video_inputs.HandVideoProcessor` standing in for the video processor.

Videos are small: 4 or 6 frames (Qwen: 2 or 3 temporal patches of 2x2 or 2x3 merged tokens; OneVision,
whose batches stack videos of one frame count: always 4 pooled 2x2 views and the closing newline), a fixed
random background with a bright square moving across it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

import gprune
from conformance_cases import MIRRORED, PHOTO, Family, build
from gprune.testing.qwen import QWEN_MODEL_TYPES
from gprune.video import kept_video_tokens
from onevision_video_inputs import HandVideoProcessor
from qwen_video_inputs import batch, sample

VIDEO_FAMILIES: tuple[str, ...] = (*QWEN_MODEL_TYPES, "llava_onevision")
CONTENTS: tuple[str, ...] = ("video", "image+video")  # what each prompt holds
FRAMES = 4  # every OneVision video's frame count


@dataclass(frozen=True)
class Video:
    """`count` frames (Qwen; OneVision: `FRAMES`) of rows x cols patches (sides in the family's patch size;
    OneVision resizes every frame to its tower's)."""

    rows: int
    cols: int
    seed: int
    count: int = FRAMES

    def frames(self, patch: int, count: int) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        height, width = self.rows * patch, self.cols * patch
        video = np.repeat((rng.random((height, width, 3)) * 200)[None], count, axis=0)
        for t in range(count):
            x = (t * patch) % (width - patch)
            video[t, :patch, x : x + patch] = 255
        return video.astype("uint8")


# (question, image, image (width, height), video); padded: different lengths; unpadded: same length
PADDED = [
    ("What?", PHOTO, (60, 40), Video(4, 4, 0)),
    ("Where does the square go?", MIRRORED, (40, 70), Video(4, 6, 1, count=6)),
]
UNPADDED = [("What is on it?", PHOTO, (60, 40), Video(4, 4, 2)), ("Who made this?", MIRRORED, (60, 40), Video(4, 4, 3))]


def build_video(name: str, seed: int = 0) -> Any:
    """`conformance_cases.build`, with OneVision's stand-in video processor."""
    tiny = build(name, seed=seed)
    if name == "llava_onevision":
        tiny.processor.video_processor = HandVideoProcessor()
    return tiny


@dataclass
class VideoFamily(Family):
    """A family whose prompts hold a video (`content` ``"video"``) or an image then a video (``"image+video"``),
    pruned with keep = video_keep and `window` frames per video graph."""

    content: str = "video"
    window: int = 1
    encoded: list[Video] = field(default_factory=list)  # the videos of the last `encode`, in prompt order

    @property
    def mismatch_token_id(self) -> int:
        return int(self.model.config.video_token_id)

    @property
    def padded_prompts(self) -> list[Any]:
        return PADDED

    @property
    def unpadded_prompts(self) -> list[Any]:
        return UNPADDED

    def config(self, keep: float) -> gprune.GPruneConfig:
        return gprune.GPruneConfig(keep=keep, video_keep=keep, video_window=self.window)

    def check_report(self, report: Any, keep: float) -> None:
        """The call held the prompt's videos (and images), and each video kept what `kept_video_tokens` says of
        its shape, `keep` and the window -- with window 1, the same share of every frame."""
        kinds = {r.kind for r in report.images}
        assert kinds == ({"image", "video"} if self.content == "image+video" else {"video"}), f"pruned {kinds}"
        # the run's last call encoded its prompts last: one video per prompt, in prompt order
        videos = [r for r in report.images if r.kind == "video"]
        assert len(videos) == len(self.encoded), f"{len(videos)} videos pruned, {len(self.encoded)} in the prompts"
        for video, given in zip(videos, self.encoded, strict=True):
            # Qwen: a frame is a temporal patch of 2 input frames; OneVision: every frame, then the closing newline
            frames, tail = (given.count // 2, 0) if self.name in QWEN_MODEL_TYPES else (FRAMES, 1)
            per_frame = (video.tokens_before - tail) // frames
            assert frames * per_frame + tail == video.tokens_before, f"{video.tokens_before} tokens in {frames} frames"
            want = kept_video_tokens(frames, per_frame, keep, window=self.window, always_kept_tail=tail)
            assert video.tokens_after == want, f"a video kept {video.tokens_after} of {video.tokens_before}, not {want}"
            if self.window == 1:
                shares = torch.bincount(video.kept_indices[video.kept_indices < frames * per_frame] // per_frame)
                assert shares.tolist() == [int(keep * per_frame)] * frames, f"kept per frame: {shares.tolist()}"

    def encode(self, prompts: list[tuple[str, Image.Image, tuple[int, int], Video]], side: str = "left") -> Any:
        with_image = self.content == "image+video"
        self.encoded = [video for _, _, _, video in prompts]
        if self.name in QWEN_MODEL_TYPES:
            patch = int(self.model.config.vision_config.patch_size)
            samples = []
            for question, image, size, video in prompts:
                parts: list[Any] = ["USER: "]
                if with_image:
                    parts += [("image", image.resize(size)), "\n"]
                parts += [("video", video.frames(patch, video.count)), f"\n{question} ASSISTANT:"]
                samples.append(sample(self.tiny, parts))
            return batch(self.tiny, samples, side)
        self.tiny.processor.tokenizer.padding_side = side
        image_slot = "<image>\n" if with_image else ""
        text = [f"USER: {image_slot}<video>\n{question} ASSISTANT:" for question, _, _, _ in prompts]
        images = [image.resize(size) for _, image, size, _ in prompts] if with_image else None
        videos = [video.frames(14, FRAMES) for _, _, _, video in prompts]  # any side: resized to the tower's
        return dict(self.tiny.processor(images=images, videos=videos, text=text, return_tensors="pt", padding=True))
