"""Fidelity of the baselines: how often each variant keeps the set its released code keeps.

DART (ZichenWen1/DART, ``get_retained_image_token``) on LLaVA-1.5-like 576-token images, image pivots
only, at sequence offset 35; DivPrune (vbdi/divprune, ``DivPrune``) on LLaVA-NeXT-like packed images
(576 base + 24 x 37 grid with newlines = 1464 tokens). Released formulations: tests/reference_baselines.py.
Clustered features, fp32.

    python benchmarks/fidelity_baselines.py [--cases 12] [--dim 1024]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import gprune  # noqa: E402
from gprune.methods import get_method  # noqa: E402
from reference_baselines import reference_dart, reference_divprune  # noqa: E402
from reference_gprune import clustered_features  # noqa: E402

OFFSET = 35


def row(name: str, keep: str, diffs: list[int]) -> str:
    same = sum(d == 0 for d in diffs)
    return f"| {name} | {keep} | {same}/{len(diffs)} | {statistics.median(diffs):g} | {max(diffs)} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--dim", type=int, default=1024)
    args = parser.parse_args()
    lines = ["| variant vs released code | keep | same set | sym. diff. median | max |", "|---|---|---|---|---|"]
    mask = torch.ones(1, 576, dtype=torch.bool)
    for k in (64, 128, 192):
        diffs: dict[str, list[int]] = {"dart": [], "dart-strongest-first": []}
        for seed in range(args.cases):
            x = clustered_features(576, args.dim, seed=seed)
            released = set(reference_dart(x.numpy(), k, 8, OFFSET))
            for name in diffs:
                params = {"sequence_offset": OFFSET} if name == "dart" else {}
                kept = set(get_method(name)(x[None], mask, [k], **params)[0].tolist())
                diffs[name].append(len(kept ^ released))
        lines += [row(f"{name} (8 pivots, offset {OFFSET})", f"{k} of 576", d) for name, d in diffs.items()]
    layout = gprune.llava_next_layout(576, 24, 36)
    for ratio in (0.11, 0.22, 1 / 3):
        diffs = {"divprune": [], "divprune-released": []}
        for seed in range(args.cases):
            x = clustered_features(layout.length, args.dim, seed=100 + seed)
            released = set(reference_divprune(x.numpy(), ratio))
            for name in diffs:
                diffs[name].append(len(set(gprune.select_in_layout(x, layout, ratio, method=name).tolist()) ^ released))
        lines += [row(name, f"{ratio:.2g} of 1464", d) for name, d in diffs.items()]
    print(f"\n{args.cases} clustered images per row, D = {args.dim}\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
