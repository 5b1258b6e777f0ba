"""`gprune bench`: prefill / decode latency, memory and selector time, unpruned vs pruned (see gprune.benchmark)."""

from __future__ import annotations

import argparse

from gprune.benchmark import add_arguments, run_from_args


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure LLM prefill (time to first token), decode tokens/s, memory and selector time per keep setting",
        description=(
            "Times a random-weight LLM on sequences of each pruned length (LLaVA-NeXT token layout) and the "
            "G-Prune selector on the same features; prints measured vs FLOPs-predicted speed-ups."
        ),
    )
    add_arguments(p)
    p.set_defaults(handler=run_from_args)
