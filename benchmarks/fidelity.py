"""Fidelity: how often gprune keeps the set the released code keeps, in fp32 and in the released fp16.

For each random LLaVA-NeXT-like image (clustered features, D = 4096: a 576-token base view and a 48 x 48
grid, 2928 packed tokens with the newlines) and each keep ratio, it compares kept sets per group:

- fp32 vs released-fp16: gprune's default against the emulation of the authors' fp16 run;
- released-fp16 vs the same arithmetic with another fp32 summation order (torch's CPU fp16 kernels, as
  in tests/reference_released_fp16.py): the floor any emulation of a GPU run can reach;
- fp32 vs the released formulation in fp32 (one GEMM, ``matrix_power``; tests/reference_gprune.py).

    python benchmarks/fidelity.py [--cases 16] [--dim 4096] [--ratios 0.5,0.333333]

Prints markdown tables (recorded in docs/algorithm.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import gprune  # noqa: E402
from gprune.core import top_indices  # noqa: E402
from gprune.released_fp16 import released_fp16_scores  # noqa: E402
from reference_gprune import clustered_features, reference_scores  # noqa: E402
from reference_released_fp16 import reference_released_fp16_scores  # noqa: E402

BASE, ROWS, COLS = 576, 48, 48
PARAMS = {"similarity_threshold": 0.5, "temperature": 0.03, "iterations": 5}


def kept(scores: torch.Tensor, k: int) -> set[int]:
    return set(top_indices(scores, k).tolist())


def group_scores(x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "fp32": gprune.graph_scores(x, **PARAMS),
        "released-fp16": released_fp16_scores(x, **PARAMS),
        "fp16 (CPU fp16 kernels)": reference_released_fp16_scores(x),
        "released fp32 (one GEMM)": reference_scores(x),
    }


PAIRS = [
    ("fp32", "released-fp16"),
    ("released-fp16", "fp16 (CPU fp16 kernels)"),
    ("fp32", "released fp32 (one GEMM)"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=16)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--ratios", default="0.5,0.333333")
    args = parser.parse_args()
    ratios = [float(r) for r in args.ratios.split(",")]
    torch.set_num_threads(max(1, torch.get_num_threads()))
    # differences[(group, ratio, pair)] = symmetric differences, one per case
    differences: dict[tuple[str, float, tuple[str, str]], list[int]] = {}
    start = time.perf_counter()
    for seed in range(args.cases):
        x = clustered_features(BASE + ROWS * (COLS + 1), args.dim, seed=1000 + seed)
        grid = x[BASE:].reshape(ROWS, COLS + 1, -1)[:, :COLS].reshape(ROWS * COLS, -1)
        for group, features, size in (("base view (576)", x[:BASE], (BASE,)), ("grid (48x48)", grid, (ROWS, COLS))):
            scores = group_scores(features)
            for ratio in ratios:
                k = ratio
                for factor in size:
                    k *= factor  # the released count, left to right: int(ratio * rows * cols)
                for a, b in PAIRS:
                    diff = len(kept(scores[a], int(k)) ^ kept(scores[b], int(k)))
                    differences.setdefault((group, ratio, (a, b)), []).append(diff)
        print(f"case {seed + 1}/{args.cases} done ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    # per image (both groups together): the packed image's kept set
    print(f"\n{args.cases} clustered LLaVA-NeXT-like images, D = {args.dim}, s = 0.5, tau = 0.03, T = 5\n")
    print("| comparison | keep | group | same set | sym. diff. median | max |")
    print("|---|---|---|---|---|---|")
    for a, b in PAIRS:
        for ratio in ratios:
            per_group = {g: differences[(g, ratio, (a, b))] for g in ("base view (576)", "grid (48x48)")}
            image = [x + y for x, y in zip(*per_group.values(), strict=True)]
            for label, diffs in [*per_group.items(), ("whole image (2928)", image)]:
                same = sum(d == 0 for d in diffs)
                print(
                    f"| {a} vs {b} | {ratio:.3g} | {label} | {same}/{len(diffs)} | "
                    f"{statistics.median(diffs):g} | {max(diffs)} |"
                )


if __name__ == "__main__":
    main()
