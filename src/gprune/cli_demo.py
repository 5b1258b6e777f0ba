"""`gprune demo`: the README's main job, offline on a fresh machine."""

from __future__ import annotations

import argparse
import time

import torch

from gprune.layouts import kept_token_count, llava_next_layout, select_in_layout


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="prune a LLaVA-NeXT-sized set of visual tokens and report the result")
    p.add_argument("--keep-ratio", type=float, default=0.33, help="fraction of each group's tokens kept")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    layout = llava_next_layout(576, 48, 48)  # a 672x672 image: 24x24 base view + 2x2 tiles
    centres = torch.randn(16, 4096) * 3
    features = centres[torch.randint(0, 16, (layout.length,))] + torch.randn(layout.length, 4096)
    start = time.perf_counter()
    kept = select_in_layout(features, layout, args.keep_ratio)
    elapsed = time.perf_counter() - start
    assert kept.numel() == kept_token_count(layout, args.keep_ratio)
    print("gprune demo: synthetic clustered features in the LLaVA-NeXT layout (no model weights).")
    print(f"visual tokens: {layout.length} -> {kept.numel()} (keep ratio {args.keep_ratio}, newlines kept)")
    print(f"selection time: {elapsed * 1e3:.1f} ms on {features.device}")
    return 0
