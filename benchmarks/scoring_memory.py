"""Scoring time and peak extra memory vs N: the dense path, the bounded (blockwise) path, and the floor X·Xᵀ.

Each measurement runs in a fresh subprocess: the features are built, the kernel's peak-RSS mark is reset
(``/proc/self/clear_refs``), the scorer runs once, and the peak RSS above the pre-call RSS is its peak
extra memory (Linux only). Times are of that same single call, or the median of `--repeats` calls after
it for N <= 4608: wall seconds and CPU seconds of the process (all threads). On a shared machine the CPU
time is the steadier measure; the ratio to the floor uses it. The kept sets (keep 0.5) of the dense and
bounded paths are compared.

    python benchmarks/scoring_memory.py [--sizes 576,2304,4608,9216,16384,32768] [--dim 3584]
        [--budget-mib 512] [--skip-dense-above 32768]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

MIB = 2**20


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def one(kind: str, n: int, d: int, budget: int, repeats: int) -> dict[str, object]:
    """Run one scorer once (plus repeats) in this process and report time, peak extra bytes and kept digest."""
    import gprune
    from gprune import graph_blocks
    from gprune.core import top_indices
    from reference_gprune import clustered_features

    x = clustered_features(n, d, seed=0).contiguous()

    def run() -> torch.Tensor | None:
        if kind == "floor":
            x @ x.mT
            return None
        if kind == "bounded":
            with graph_blocks.bounded_scoring(budget):
                return gprune.graph_scores(x)
        graph_blocks.MEMORY_BUDGET_BYTES = 2**62  # the dense path whatever N (this is a subprocess)
        return gprune.graph_scores(x)

    before = _rss("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark to the current RSS
    start, cpu = time.perf_counter(), time.process_time()
    scores = run()
    first, first_cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = _rss("VmHWM") - before
    times, cpus = [first], [first_cpu]
    if repeats > 1:
        times, cpus = [], []
        for _ in range(repeats):
            start, cpu = time.perf_counter(), time.process_time()
            run()
            times.append(time.perf_counter() - start)
            cpus.append(time.process_time() - cpu)
    digest = "-"
    if scores is not None:
        kept = top_indices(scores, n // 2)
        digest = hashlib.sha1(kept.numpy().tobytes()).hexdigest()[:12]
    return {"seconds": statistics.median(times), "cpu": statistics.median(cpus), "peak_extra_bytes": peak,
            "kept": digest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="576,2304,4608,9216,16384,32768")
    parser.add_argument("--dim", type=int, default=3584)
    parser.add_argument("--budget-mib", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls for N <= 4608 (one call above)")
    parser.add_argument("--skip-dense-above", type=int, default=32768)
    parser.add_argument("--one", nargs=3, metavar=("KIND", "N", "REPEATS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    budget = args.budget_mib * MIB
    if args.one:
        kind, n, repeats = args.one[0], int(args.one[1]), int(args.one[2])
        print(json.dumps(one(kind, n, args.dim, budget, repeats)))
        return

    print(f"# scoring memory benchmark: {platform.processor() or platform.machine()}, "
          f"threads={torch.get_num_threads()}, torch {torch.__version__}, fp32, T=5, D={args.dim}, "
          f"budget {args.budget_mib} MiB; clustered features (tests/reference_gprune.py)")
    print("| N | X·Xᵀ s (CPU s) | dense s (CPU s) | bounded s (CPU s) | bounded / X·Xᵀ, CPU | X·Xᵀ peak MiB | "
          "dense peak MiB | bounded peak MiB | bounded / dense peak | same kept set |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|")
    for n in map(int, args.sizes.split(",")):
        repeats = args.repeats if n <= 4608 else 1
        results = {}
        for kind in ("floor", "dense", "bounded"):
            if kind == "dense" and n > args.skip_dense_above:
                continue
            cmd = [sys.executable, __file__, "--dim", str(args.dim), "--budget-mib", str(args.budget_mib),
                   "--one", kind, str(n), str(repeats)]
            # big blocks straight from mmap and back on free, so a freed buffer's reuse cannot hide a peak
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                results[kind] = None
                print(f"<!-- {kind} N={n} failed: {done.stderr.strip().splitlines()[-1:]} -->", flush=True)
                continue
            results[kind] = json.loads(done.stdout.strip().splitlines()[-1])

        def cell(kind: str, key: str, scale: float = 1.0, fmt: str = "{:.2f}", results: dict = results) -> str:
            r = results.get(kind)
            return fmt.format(r[key] / scale) if r else "-"

        floor, dense, bounded = results.get("floor"), results.get("dense"), results.get("bounded")
        ratio = f"{bounded['cpu'] / floor['cpu']:.2f}x" if floor and bounded else "-"

        def both(kind: str, results: dict = results) -> str:
            r = results.get(kind)
            return f"{r['seconds']:.2f} ({r['cpu']:.2f})" if r else "-"

        mem = f"{bounded['peak_extra_bytes'] / dense['peak_extra_bytes']:.0%}" if dense and bounded else "-"
        same = ("yes" if dense["kept"] == bounded["kept"] else "NO") if dense and bounded else "-"
        print(f"| {n} | {both('floor')} | {both('dense')} | {both('bounded')} | "
              f"{ratio} | {cell('floor', 'peak_extra_bytes', MIB, '{:.0f}')} | "
              f"{cell('dense', 'peak_extra_bytes', MIB, '{:.0f}')} | "
              f"{cell('bounded', 'peak_extra_bytes', MIB, '{:.0f}')} | "
              f"{mem} | {same} |", flush=True)


if __name__ == "__main__":
    main()
