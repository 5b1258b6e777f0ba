"""The `gprune` command line. Each sub-command lives in its own module and registers itself here."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

import gprune
from gprune.errors import UserError
from gprune.integrations.hf_version import require_transformers

# Each module defines `add_command(subparsers)`, which adds its sub-command and sets `handler`. Building
# the parser imports no transformers (`gprune --help` works with the core alone); a command needs a
# supported transformers unless it sets ``needs_transformers=False`` in its defaults.
COMMAND_MODULES: list[str] = [
    "gprune.cli_demo",
    "gprune.cli_run",
    "gprune.cli_flops",
    "gprune.cli_bench",
    "gprune.cli_eval",
    "gprune.cli_visualize",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gprune",
        description="Training-free visual token pruning for multimodal LLMs (G-Prune, AAAI 2025).",
    )
    parser.add_argument("--version", action="version", version=f"gprune {gprune.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if getattr(args, "needs_transformers", True):
            require_transformers()
        return int(args.handler(args) or 0)
    except (UserError, FileNotFoundError, ValueError) as err:
        print(f"gprune {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
