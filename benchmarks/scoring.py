"""Scoring cost: gprune.graph_scores against the bare similarity product and the released matrix_power form.

The similarity product X·Xᵀ is the floor no exact method can beat; the released code builds the T-step
transition with ``torch.linalg.matrix_power`` (dense N^3 products). All three run side by side in one
process, so the ratios are meaningful even on a shared, noisy machine.

    python benchmarks/scoring.py [--repeats 5] [--device cpu|cuda] [--markdown]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import gprune  # noqa: E402
from reference_gprune import clustered_features, reference_scores  # noqa: E402


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> tuple[float, float]:
    """Median and (max - min) wall time in seconds after one warm-up call."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), max(times) - min(times)


def similarity_product(x: torch.Tensor) -> torch.Tensor:
    return x @ x.mT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", default="576,2304,2880")
    parser.add_argument("--dims", default="1024,4096")
    parser.add_argument("--batch", type=int, default=4, help="images scored in one batched call")
    parser.add_argument("--no-reference", action="store_true", help="skip the slow matrix_power form")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"# scoring benchmark: device={device} ({name}), threads={torch.get_num_threads()}, "
          f"torch {torch.__version__}, fp32, T=5, repeats={args.repeats} (median, spread = max-min)")
    print("| N | D | X·Xᵀ ms | gprune ms | matrix_power ms | gprune / X·Xᵀ | matrix_power / gprune |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in map(int, args.sizes.split(",")):
        for d in map(int, args.dims.split(",")):
            x = clustered_features(n, d, seed=0).to(device)
            floor, floor_spread = timed(lambda x=x: similarity_product(x), args.repeats, device)
            ours, ours_spread = timed(lambda x=x: gprune.graph_scores(x), args.repeats, device)
            if args.no_reference:
                ref_cell, ratio_cell = "-", "-"
            else:
                ref, _ = timed(lambda x=x: reference_scores(x), max(1, args.repeats // 2), device)
                ref_cell, ratio_cell = f"{ref * 1e3:.1f}", f"{ref / ours:.2f}x"
            print(f"| {n} | {d} | {floor * 1e3:.1f} ±{floor_spread * 1e3:.1f} | {ours * 1e3:.1f} "
                  f"±{ours_spread * 1e3:.1f} | {ref_cell} | {ours / floor:.2f}x | {ratio_cell} |", flush=True)
    n, d, b = 2880, 4096, args.batch
    xs = clustered_features(b * n, d, seed=1).view(b, n, d).to(device)
    batched, _ = timed(lambda: gprune.graph_scores(xs), args.repeats, device)
    looped, _ = timed(lambda: [gprune.graph_scores(x) for x in xs], args.repeats, device)
    print(f"\nbatched scoring of {b} images x {n} tokens x D={d}: one call {batched * 1e3:.1f} ms, "
          f"{b} calls {looped * 1e3:.1f} ms ({looped / batched:.2f}x)")


if __name__ == "__main__":
    main()
